"""Separation with a trained separator: ``waveforms`` (mixture + visual queries → one stem per
query, sliding window) and ``videos`` (``ial separate``: your videos, featurized like the training
data, → WAV stems). May import ``ial.models`` and the featurize entry point, nothing above."""
