"""yt-dlp exact-section downloads against the loopback server, with every outcome named."""

import pytest
from yt_dlp.utils import DownloadError

from ial.media import probe_media
from preprocessing.ingest.download import (backoff_delay, download_section, download_video,
                                           download_with_retries, video_name)
from preprocessing.ingest.outcomes import (Retryable, SourceInvalid, Unavailable, classify_error,
                                           redact)
from preprocessing.ingest.rate_limit import RateLimiter, share
from tests.conftest import REPO, free_port


def _url(srv, entry):
    return srv.url_template.format(video_id=entry.video_id)


def test_exact_section_through_range_requests(video_server, demo_corpus, tmp_path):
    e = demo_corpus.entries[0]
    got = download_section(_url(video_server, e), 1.5, 5.5, str(tmp_path), "sec")
    info = probe_media(got.path)
    assert got.attempts == 1 and got.bytes > 0 and got.source_duration is None  # direct link
    assert abs(info["duration"] - 4.0) < 0.05 and info["has_audio"] and info["has_video"]
    ranged = [r for r in video_server.requests_for(e.video_id) if r[2]]
    assert ranged and all(r[3] == 206 for r in ranged)  # ffmpeg read the file with Range


def test_a_whole_video_and_its_first_seconds_for_ial_separate(video_server, demo_corpus,
                                                               tmp_path):
    e = demo_corpus.entries[0]
    url = _url(video_server, e) + "?t=1"
    whole = download_video(url, str(tmp_path / "whole"))
    assert whole == str(tmp_path / "whole" / f"{e.video_id}.mp4")
    assert abs(probe_media(whole)["duration"] - 13.0) < 0.05  # the corpus's videos are 13 s
    first = download_video(url, str(tmp_path / "first"), seconds=11.0)
    assert abs(probe_media(first)["duration"] - 11.0) < 0.05
    longer = download_video(url, str(tmp_path / "longer"), seconds=60.0)  # all there is
    assert abs(probe_media(longer)["duration"] - 13.0) < 0.1


@pytest.mark.parametrize("url, name", [
    ("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s", "dQw4w9WgXcQ"),
    ("https://youtu.be/dQw4w9WgXcQ?si=x", "dQw4w9WgXcQ"),
    ("https://www.youtube.com/shorts/abcDEF12345", "abcDEF12345"),
    ("http://host/media/my%20clip.webm", "my_clip"),
    ("http://host/", "video"),
])
def test_video_name_of_a_url(url, name):
    assert video_name(url) == name


@pytest.mark.parametrize("script, cls, reason", [
    ([404], Unavailable, "http_404"),
    ([403], Unavailable, "http_403"),
    ([410], Unavailable, "http_410"),
    (["bot", "bot"], Unavailable, "bot_check"),
    ([429], Retryable, "http_429"),
    ([503], Retryable, "http_503"),
    (["drop"], Retryable, "connection_error"),
])
def test_http_failures_are_classified(video_server, demo_corpus, tmp_path, script, cls, reason):
    e = demo_corpus.entries[1]
    video_server.script(e.video_id, script, retry_after=7)
    with pytest.raises(cls) as err:
        download_section(_url(video_server, e), 1, 3, str(tmp_path), "sec")
    assert err.value.reason == reason
    if reason == "http_429":
        assert err.value.retry_after == 7.0
    assert list(tmp_path.iterdir()) == [] or all(p.suffix != ".mp4" for p in tmp_path.iterdir())


def test_connection_refused_is_retryable(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/videos/x.mp4"
    with pytest.raises(Retryable) as err:
        download_section(url, 1, 3, str(tmp_path), "sec")
    assert err.value.reason == "connection_error"


def test_429_then_ok_honours_retry_after(video_server, demo_corpus, tmp_path):
    e = demo_corpus.entries[2]
    video_server.script(e.video_id, [429, 200], retry_after=2)
    waits, acquired = [], []
    result = download_with_retries(_url(video_server, e), 1, 3, str(tmp_path), "sec", retries=3,
                                   backoff=0.01, sleep=waits.append,
                                   acquire=lambda: acquired.append(1))
    assert result.attempts == 2 and len(acquired) == 2
    assert len(waits) == 1 and 2.0 <= waits[0] <= 2.1  # Retry-After, not the 0.01 s backoff
    assert [r[3] for r in video_server.requests_for(e.video_id)][:2] == [429, 200]


def test_500_then_ok_and_retries_exhausted(video_server, demo_corpus, tmp_path):
    e = demo_corpus.entries[3]
    video_server.script(e.video_id, [500, 200])
    waits = []
    ok = download_with_retries(_url(video_server, e), 1, 3, str(tmp_path / "a"), "sec",
                               retries=2, backoff=0.5, sleep=waits.append)
    assert ok.attempts == 2 and 0.25 <= waits[0] <= 0.5
    video_server.script(e.video_id, [500, 502, 500])
    with pytest.raises(Retryable) as err:
        download_with_retries(_url(video_server, e), 1, 3, str(tmp_path / "b"), "sec",
                              retries=2, backoff=0.01, sleep=lambda s: None)
    assert err.value.reason == "http_500" and err.value.attempts == 3
    video_server.script(e.video_id, [404])
    with pytest.raises(Unavailable) as err:  # never retried
        download_with_retries(_url(video_server, e), 1, 3, str(tmp_path / "c"), "sec",
                              retries=5, sleep=lambda s: None)
    assert err.value.attempts == 1


def test_unreadable_media_is_invalid(video_server, demo_corpus, tmp_path):
    garbage = tmp_path.parent / "garbage_srv" / "videos"
    garbage.mkdir(parents=True)
    (garbage / "zzzzzzzzzzz.mp4").write_bytes(b"\x00not a video" * 4000)
    from ial.demo.video_server import VideoServer

    with VideoServer(garbage.parent) as srv:
        with pytest.raises(SourceInvalid) as err:
            download_section(srv.url_template.format(video_id="zzzzzzzzzzz"), 1, 3,
                             str(tmp_path), "sec")
    assert err.value.reason == "unreadable_source"


@pytest.mark.parametrize("message, reason", [
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access", "private"),
    ("ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate",
     "age_restricted"),
    ("ERROR: [youtube] abc: Sign in to confirm you’re not a bot. Use --cookies", "bot_check"),
    ("ERROR: [youtube] abc: Video unavailable. The uploader has not made this video available "
     "in your country", "geo_restricted"),
    ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader",
     "removed"),
    ("ERROR: [youtube] abc: Video unavailable", "removed"),
])
def test_youtube_messages_are_unavailable(message, reason):
    problem = classify_error(DownloadError(message))
    assert isinstance(problem, Unavailable) and problem.reason == reason


def test_backoff_rate_limit_and_redaction():
    import random

    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 8.0, None, rng) for a in (1, 2, 3, 4, 5)]
    assert 0.5 <= delays[0] <= 1.0 and 2.0 <= delays[2] <= 4.0 and delays[4] <= 8.0
    assert 30.0 <= backoff_delay(1, 1.0, 60.0, 30.0, rng) <= 30.1
    now = [0.0]
    slept = []
    limiter = RateLimiter(120, clock=lambda: now[0], sleep=slept.append)  # one per 0.5 s
    for _ in range(4):
        limiter.acquire()
    assert slept == [0.5, 1.0, 1.5]
    assert share(60, 4) == 15 and share(0, 4) == 0
    assert redact("proxy http://bob:hunter2@proxy:8080/ x") == "proxy http://***@proxy:8080/ x"


def _youtube_like_info(formats):
    return dict(id="abcdefghijk", title="t", formats=formats, extractor="youtube",
                extractor_key="Youtube", webpage_url="http://example.invalid/watch", duration=13)


def test_lowest_format_with_min_height_plus_audio(tmp_path):
    from yt_dlp import YoutubeDL

    from preprocessing.ingest.download import ytdlp_params

    formats = [dict(format_id=fid, url=f"http://x/{fid}", ext="mp4", vcodec="avc1", acodec="none",
                    height=h, width=h * 16 // 9, tbr=h * 2, protocol="https")
               for h, fid in [(144, "160"), (240, "133"), (360, "134"), (720, "136")]]
    formats += [dict(format_id="139", url="http://x/139", ext="m4a", vcodec="none",
                     acodec="mp4a.40.5", abr=48, asr=22050, protocol="https"),
                dict(format_id="140", url="http://x/140", ext="m4a", vcodec="none",
                     acodec="mp4a.40.2", abr=128, asr=44100, protocol="https")]
    params = ytdlp_params(str(tmp_path), "x", 1, 11, min_height=224)
    with YoutubeDL(dict(params, simulate=True)) as ydl:
        chosen = ydl.process_ie_result(_youtube_like_info(formats), download=False)
    assert [f["format_id"] for f in chosen["requested_formats"]] == ["133", "139"]
    params = ytdlp_params(str(tmp_path), "x", 1, 11, min_height=400)
    with YoutubeDL(dict(params, simulate=True)) as ydl:
        chosen = ydl.process_ie_result(_youtube_like_info(formats), download=False)
    assert chosen["requested_formats"][0]["format_id"] == "136"


def test_separate_video_and_audio_formats_are_cut_and_merged(demo_corpus, tmp_path):
    """The YouTube shape (video-only + audio-only streams): yt-dlp's ffmpeg seeks both over
    HTTP and writes one exact section in the clip format."""
    import subprocess

    from yt_dlp import YoutubeDL
    from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

    from ial.demo.video_server import VideoServer
    from ial.media import ffmpeg_binary
    from preprocessing.ingest.download import ytdlp_params
    from preprocessing.ingest.slicing import clip_encode_args, measure_clip

    e = demo_corpus.entries[4]
    site = tmp_path / "site"
    site.mkdir()
    for suffix, flag in (("v", "-an"), ("a", "-vn")):
        subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-i", e.path, flag, "-c", "copy",
                        "-movflags", "+faststart", str(site / f"{suffix}.mp4")], check=True)
    server = VideoServer(site).start()
    base = server.base_url + "/"
    formats = [dict(format_id="133", url=base + "v.mp4", ext="mp4", vcodec="avc1", acodec="none",
                    height=240, width=320, protocol="http"),
               dict(format_id="139", url=base + "a.mp4", ext="m4a", vcodec="none",
                    acodec="mp4a.40.2", asr=22050, protocol="http")]
    params = ytdlp_params(str(tmp_path / "out"), "sec", 1.0, 5.0, min_height=224,
                          output_args=clip_encode_args(8, 224, 22050))
    token = FFmpegPostProcessor._ffmpeg_location.set(params["ffmpeg_location"])
    try:
        with YoutubeDL(params) as ydl:
            info = ydl.process_ie_result(_youtube_like_info(formats), download=True)
    finally:
        FFmpegPostProcessor._ffmpeg_location.reset(token)
        server.stop()
    path = info["requested_downloads"][0]["filepath"]
    m = measure_clip(path)
    assert (m.frames, m.samples) == (32, 88200)
    assert probe_media(path)["height"] == 224


def test_stalled_server_is_a_retryable_timeout(video_server, demo_corpus, tmp_path):
    e = demo_corpus.entries[5]
    video_server.script(e.video_id, ["stall"], retry_after=3)
    with pytest.raises(Retryable) as err:
        download_section(_url(video_server, e), 1, 3, str(tmp_path), "sec", socket_timeout=1)
    assert err.value.reason == "timeout"


def test_cookie_file_is_read_from_a_private_copy_never_rewritten(video_server, demo_corpus,
                                                                  tmp_path):
    e = demo_corpus.entries[0]
    cookies = tmp_path / "cookies.txt"
    text = ("# Netscape HTTP Cookie File\n# my own notes: keep this line\n"
            "127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc123\n")
    cookies.write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    got = download_section(_url(video_server, e), 1.0, 3.0, str(out), "sec",
                           options={"cookiefile": str(cookies)})
    assert got.bytes > 0
    assert cookies.read_text() == text  # yt-dlp saved its jar to the private copy, not here
    missing = tmp_path / "nope.txt"
    with pytest.raises(Retryable, match="cookie_file_missing"):
        download_section(_url(video_server, e), 1.0, 3.0, str(out), "sec2",
                         options={"cookiefile": str(missing)})
    assert not missing.exists()  # never created


@pytest.fixture
def plain_http_site(tmp_path):
    """Python's http.server (no Range support) over a folder with an mp4 whose index (moov) is
    at the end, and an audio-only m4a."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from ial.media import run_ffmpeg

    site = tmp_path / "plain"
    site.mkdir()
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i",
                "sine=frequency=440:sample_rate=22050", "-t", "8", "-c:v", "libx264",
                "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                str(site / "moovlast.mp4")])
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", "8",
                "-c:a", "aac", str(site / "audioonly.m4a")])

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_without_range_support_gets_a_whole_file_download(plain_http_site, tmp_path):
    from preprocessing.ingest.slicing import SliceInvalid, finalize_section, measure_clip

    got = download_section(f"{plain_http_site}/moovlast.mp4", 2.0, 6.0, str(tmp_path), "sec")
    assert got.offset == 2.0  # the whole file came; the section starts 2 s into it
    clip = finalize_section(got.path, str(tmp_path / "clip.mp4"), duration=4.0, fps=8,
                            min_side=224, audio_rate=11025, start=got.offset)
    m = measure_clip(clip.path)
    assert (m.frames, m.samples) == (32, 44100)
    audio = download_section(f"{plain_http_site}/audioonly.m4a", 2.0, 6.0, str(tmp_path), "aud")
    with pytest.raises(SliceInvalid) as err:  # named for what it is, not "unreadable_source"
        finalize_section(audio.path, str(tmp_path / "a.mp4"), duration=4.0, start=audio.offset)
    assert err.value.reason == "no_video_stream"


_INTERLEAVED_FIRST_DOWNLOADS = r"""
import json, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
import yt_dlp.plugins as plugins
from preprocessing.ingest.download import load_ytdlp_extractors, ytdlp_params

merge = plugins.merge_dicts
def merge_then_pause(*dicts):  # stage the unlucky thread switch: thread 0 takes its copy of
    merged = merge(*dicts)     # the empty extractor table, thread 1 runs meanwhile
    if threading.current_thread().name.endswith("_0") and dicts[-1] == {}:
        time.sleep(0.5)
    return merged
plugins.merge_dicts = merge_then_pause

def first_download(i):
    from yt_dlp import YoutubeDL
    time.sleep(0.1 * i)
    if sys.argv[1] == "fixed":
        load_ytdlp_extractors()
    with YoutubeDL(ytdlp_params("/tmp", "x", 0, 1)) as ydl:
        return sorted(ydl._ies)

with ThreadPoolExecutor(2, thread_name_prefix="download") as pool:
    print(json.dumps(list(pool.map(first_download, range(2)))))
"""


@pytest.mark.parametrize("mode", ["fixed", "unguarded"])
def test_two_first_downloads_in_a_fresh_process_both_get_the_extractors(mode):
    """yt-dlp's first ``YoutubeDL()`` in a process fills its extractor table without a lock; the
    thread switch that left a CI worker without any extractor is staged here (in a fresh
    interpreter: the tables are per process). The unguarded run shows that the staging makes
    the race happen in the installed yt-dlp, so the fixed run's pass means something."""
    import json
    import subprocess
    import sys

    import yt_dlp.plugins

    if not hasattr(yt_dlp.plugins, "merge_dicts"):
        pytest.skip("this yt-dlp loads its plugins differently: the interleaving cannot be staged")
    proc = subprocess.run([sys.executable, "-c", _INTERLEAVED_FIRST_DOWNLOADS, mode],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    both = json.loads(proc.stdout.strip().splitlines()[-1])
    if mode == "fixed":
        assert both == [["Generic", "Youtube"]] * 2, proc.stdout
    elif both != [[], ["Generic", "Youtube"]]:
        pytest.skip(f"this yt-dlp no longer loses its extractor table ({both}): "
                    "load_ytdlp_extractors may have become unnecessary")
