import http.client
import urllib.request

import pytest

from ial.demo.video_server import BOT_CHECK_PAGE, VideoServer


def _get(srv, path, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def test_full_and_range_requests(video_server, demo_corpus):
    e = demo_corpus.entries[0]
    data = open(e.path, "rb").read()
    path = f"/videos/{e.video_id}.mp4"
    assert video_server.url_template.format(video_id=e.video_id) == video_server.url(path)

    resp, body = _get(video_server, path)
    assert resp.status == 200 and body == data
    assert resp.getheader("Content-Type") == "video/mp4"
    assert int(resp.getheader("Content-Length")) == len(data)
    assert resp.getheader("Accept-Ranges") == "bytes"

    resp, body = _get(video_server, path, {"Range": "bytes=100-199"})
    assert resp.status == 206 and body == data[100:200]
    assert resp.getheader("Content-Range") == f"bytes 100-199/{len(data)}"
    assert int(resp.getheader("Content-Length")) == 100

    resp, body = _get(video_server, path, {"Range": "bytes=1000-"})
    assert resp.status == 206 and body == data[1000:]
    resp, body = _get(video_server, path, {"Range": "bytes=-50"})
    assert resp.status == 206 and body == data[-50:]
    resp, body = _get(video_server, path, {"Range": f"bytes={len(data) + 5}-"})
    assert resp.status == 416

    resp, body = _get(video_server, path, method="HEAD")
    assert resp.status == 200 and body == b"" and int(resp.getheader("Content-Length")) == len(data)

    resp, _ = _get(video_server, "/videos/nope.mp4")
    assert resp.status == 404
    resp, _ = _get(video_server, "/../../etc/passwd")
    assert resp.status == 404
    assert ("GET", path, "bytes=100-199", 206) in video_server.requests


def test_keep_alive_serves_several_ranges_on_one_connection(video_server, demo_corpus):
    e = demo_corpus.entries[1]
    data = open(e.path, "rb").read()
    conn = http.client.HTTPConnection("127.0.0.1", video_server.port, timeout=10)
    for a, b in [(0, 9), (500, 1499), (20, 20)]:
        conn.request("GET", f"/videos/{e.video_id}.mp4", headers={"Range": f"bytes={a}-{b}"})
        resp = conn.getresponse()
        assert resp.status == 206 and resp.read() == data[a:b + 1]
    conn.close()


def test_scripted_faults_then_normal_service(video_server, demo_corpus):
    vid = demo_corpus.entries[2].video_id
    video_server.script(vid, [429, 500, "bot", 410, 200], retry_after=3)
    url = video_server.url_template.format(video_id=vid)
    statuses = []
    for _ in range(4):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=10)
        statuses.append(err.value.code)
        if err.value.code == 429:
            assert err.value.headers["Retry-After"] == "3"
        if statuses[-1] == 403:
            assert err.value.read() == BOT_CHECK_PAGE
    assert statuses == [429, 500, 403, 410]
    assert urllib.request.urlopen(url, timeout=10).status == 200  # scripted 200
    assert urllib.request.urlopen(url, timeout=10).status == 200  # script exhausted
    assert [r[3] for r in video_server.requests_for(vid)] == [429, 500, "bot", 410, 200, 200]


def test_drop_closes_connection(video_server, demo_corpus):
    vid = demo_corpus.entries[3].video_id
    video_server.script(vid, ["drop"])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(video_server.url_template.format(video_id=vid), timeout=10)
    with pytest.raises(ValueError):
        video_server.script(vid, ["teapot"])


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        VideoServer(tmp_path / "nope").start()


def test_serving_the_videos_folder_itself(demo_corpus):
    e = demo_corpus.entries[0]
    with VideoServer(demo_corpus.videos_dir) as srv:
        resp, body = _get(srv, f"/videos/{e.video_id}.mp4", {"Range": "bytes=0-99"})
        assert resp.status == 206 and body == open(e.path, "rb").read()[:100]
