"""A Range-capable loopback HTTP server for a directory of videos, with scripted faults.

Python's ``http.server`` ignores ``Range`` requests, so yt-dlp's exact-section download (ffmpeg
seeking over HTTP) cannot work against it. This server answers ``Range: bytes=a-b`` with
``206 Partial Content`` + ``Content-Range``, supports ``HEAD``, and keeps connections alive
(HTTP/1.1), so yt-dlp downloads sections through its generic extractor the way it would from a
video host.

Fault injection for tests: ``script(path, [429, 500, 200, ...])`` makes the next requests to
``path`` answer these in order (one entry per request, any method), then normal service resumes.
Entries are an HTTP status (``200`` = serve normally), ``"bot"`` (403 with a "Sign in to confirm
you're not a bot" page), ``"drop"`` (close the connection without answering) or ``"stall"``
(answer nothing for ``retry_after`` seconds, then close: a client timeout)::

    with VideoServer("/tmp/corpus") as srv:
        url = srv.url_template.format(video_id="abc")   # http://127.0.0.1:PORT/videos/abc.mp4
        srv.script("/videos/abc.mp4", [429, 200], retry_after=1)
        ...
        srv.requests   # [(method, path, range header, status), ...]

``directory`` may be a corpus folder (``/videos/x.mp4`` → ``DIR/videos/x.mp4``) or the videos
folder itself (no ``videos`` subfolder: ``/videos/x.mp4`` → ``DIR/x.mp4``).

CLI: ``python -m ial.demo.video_server DIR --port 8000``.
"""

from __future__ import annotations

import mimetypes
import os
import re
import threading
import urllib.parse
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
BOT_CHECK_PAGE = (
    b"<html><head><title>YouTube</title></head><body>"
    b"<p>Sign in to confirm you're not a bot. This helps protect our community.</p>"
    b"</body></html>"
)
_MESSAGES = {
    403: b"Forbidden",
    404: b"Not Found: this video is unavailable",
    410: b"Gone: this video has been removed",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    # ------------------------------------------------------------------------------------------
    def _record(self, status) -> None:
        with self.server.lock:
            self.server.requests.append(
                (self.command, self._path(), self.headers.get("Range"), status))

    def _path(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)

    def _send_body(self, status: int, body: bytes, content_type: str = "text/plain",
                   extra: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        path = self._path()
        fault = self.server.next_fault(path)
        if fault is not None and fault != 200:
            self._record(fault)
            if fault == "stall":
                import time

                time.sleep(self.server.retry_after.get(path, 1))
                fault = "drop"
            if fault == "drop":
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return
            if fault == "bot":
                self._send_body(403, BOT_CHECK_PAGE, "text/html; charset=utf-8", head=head)
                return
            status = int(fault)
            extra = {}
            if status == 429 or status == 503:
                extra["Retry-After"] = str(self.server.retry_after.get(path, 1))
            self._send_body(status, _MESSAGES.get(status, b"error"), extra=extra, head=head)
            return
        try:
            self._serve_file(path, head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _serve_file(self, path: str, head: bool) -> None:
        root = self.server.directory
        rel = path.lstrip("/")
        if rel.startswith("videos/") and not os.path.isdir(os.path.join(root, "videos")):
            rel = rel[len("videos/"):]  # serving the videos folder itself
        local = os.path.realpath(os.path.join(root, rel))
        if not (local == root or local.startswith(root + os.sep)) or not os.path.isfile(local):
            self._record(404)
            self._send_body(404, _MESSAGES[404], head=head)
            return
        size = os.path.getsize(local)
        ctype = mimetypes.guess_type(local)[0] or "application/octet-stream"
        start, end, status = 0, size - 1, 200
        header = self.headers.get("Range")
        if header:
            m = _RANGE.match(header.strip())
            if not m or (m.group(1) == "" and m.group(2) == ""):
                self._record(416)
                self._send_body(416, b"bad range", extra={"Content-Range": f"bytes */{size}"},
                                head=head)
                return
            a, b = m.groups()
            if a == "":  # suffix: last b bytes
                start, end = max(0, size - int(b)), size - 1
            else:
                start = int(a)
                end = min(int(b), size - 1) if b else size - 1
            if start >= size or start > end:
                self._record(416)
                self._send_body(416, b"range not satisfiable",
                                extra={"Content-Range": f"bytes */{size}"}, head=head)
                return
            status = 206
        length = end - start + 1
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        with open(local, "rb") as f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                chunk = f.read(min(1 << 16, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, directory: str):
        super().__init__(address, _Handler)
        self.directory = os.path.realpath(directory)
        self.lock = threading.Lock()
        self.scripts: dict[str, deque] = {}
        self.retry_after: dict[str, int] = {}
        self.requests: list[tuple] = []

    def handle_error(self, request, client_address) -> None:
        """Clients hanging up mid-response (ffmpeg seeking, yt-dlp probing) are normal here."""
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def next_fault(self, path: str):
        with self.lock:
            queue = self.scripts.get(path)
            if queue:
                return queue.popleft()
        return None


class VideoServer:
    """Serves ``directory`` on ``host:port`` (port 0 = a free one) in a background thread."""

    def __init__(self, directory: str | os.PathLike, host: str = "127.0.0.1", port: int = 0):
        self.directory = str(directory)
        self.host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle --------------------------------------------------------------------------------
    def start(self) -> "VideoServer":
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"video server directory does not exist: {self.directory}")
        self._server = _Server((self.host, self._port), self.directory)
        self._thread = threading.Thread(target=self._server.serve_forever, name="video-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "VideoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # addresses --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url_template(self) -> str:
        """``http://HOST:PORT/videos/{video_id}.mp4`` (the ingest ``url_template``)."""
        return self.base_url + "/videos/{video_id}.mp4"

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    # fault injection --------------------------------------------------------------------------
    def script(self, path: str, responses: list, retry_after: int = 1) -> None:
        """The next ``len(responses)`` requests to ``path`` answer these in order (int status,
        200 = serve normally, ``"bot"``, ``"drop"``); ``Retry-After`` on 429/503 = ``retry_after``
        seconds (also how long ``"stall"`` waits). ``path`` may be a URL path
        (``/videos/x.mp4``) or a video id."""
        path = self._norm(path)
        for r in responses:
            if not (isinstance(r, int) or r in ("bot", "drop", "stall")):
                raise ValueError(f"unknown scripted response {r!r}")
        assert self._server is not None, "server not started"
        with self._server.lock:
            self._server.scripts[path] = deque(responses)
            self._server.retry_after[path] = int(retry_after)

    def clear_scripts(self) -> None:
        assert self._server is not None
        with self._server.lock:
            self._server.scripts.clear()

    @property
    def requests(self) -> list[tuple]:
        """Every request answered so far: ``(method, path, range header or None, status)``."""
        assert self._server is not None
        with self._server.lock:
            return list(self._server.requests)

    def requests_for(self, path: str) -> list[tuple]:
        path = self._norm(path)
        return [r for r in self.requests if r[1] == path]

    @staticmethod
    def _norm(path: str) -> str:
        if "/" not in path and not path.endswith(".mp4"):
            path = f"/videos/{path}.mp4"  # a bare video id
        return "/" + path.lstrip("/")


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - convenience CLI
    import argparse
    import time

    p = argparse.ArgumentParser(description="Serve a directory over HTTP with Range support.")
    p.add_argument("directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args(argv)
    with VideoServer(a.directory, a.host, a.port) as srv:
        print(f"serving {a.directory} at {srv.base_url} (template {srv.url_template})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    main()
