"""The demo and its fixtures: ``pipeline`` (``ial demo``: corpus → ingest → featurize → train →
evaluate through the Prefect flows), ``corpus`` (a generated audio-visual corpus, mp4 + VGGSound
CSV) and ``video_server`` (a Range-capable loopback HTTP server that serves it to yt-dlp). Tests
and benchmarks import the corpus and the server too. An application: may import anything."""
