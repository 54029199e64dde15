"""One storage root for every stage: a local directory or an ``s3://bucket/prefix`` URL.

All paths in the project are fsspec URLs under a root (``--root``, default ``./data``)::

    root = Storage("s3://bucket/ial")       # or Storage("./data")
    root.url("clips", "vggsound", "x.mp4")  # -> "s3://bucket/ial/clips/vggsound/x.mp4"
    with atomic_write(root.url("index.parquet"), "wb") as f: ...

S3 endpoint and credentials come from the standard AWS variables/config (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ...), never from code, logs or stats.

Atomicity: ``atomic_write`` is the one way the project writes a file a reader may look at.
Locally it writes ``.<name>.tmp-<random>`` beside the target and renames it into place
(``os.replace``, atomic on POSIX). On object stores a PUT only becomes visible once complete,
so the object is uploaded from a local temporary file in one ``put``; a killed writer leaves
nothing under the target name.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Iterator

import fsspec
from fsspec.core import url_to_fs

from ial.errors import UserError

DEFAULT_ROOT = "./data"


class StorageError(UserError):
    """The storage root cannot be used: a bucket that does not exist, credentials that are
    refused, an unreachable endpoint, a root that is a file or not writable."""


def is_remote(url: str) -> bool:
    """True for URLs of a non-local filesystem (``s3://`` ...)."""
    return "://" in str(url) and not str(url).startswith("file://")


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(fs, path)`` for a URL. S3 listings are not cached (another writer may have added
    files)."""
    url = str(url)
    if url.startswith("s3://"):
        return url_to_fs(url, use_listings_cache=False)
    return url_to_fs(url)


def join(base: str, *parts: str) -> str:
    """Join URL/path parts with ``/`` (works for local paths and ``s3://``)."""
    base = str(base)
    clean = [str(p).strip("/") for p in parts if str(p)]
    if not clean:
        return base
    return base.rstrip("/") + "/" + "/".join(clean)


class Storage:
    """A storage root. ``url(*parts)`` gives a full URL under it."""

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT):
        root = str(root)
        if not is_remote(root):
            root = root[len("file://"):] if root.startswith("file://") else root
            root = str(Path(root).expanduser().absolute())
        self.root = root.rstrip("/") if root != "/" else root

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    @property
    def remote(self) -> bool:
        return is_remote(self.root)

    def url(self, *parts: str) -> str:
        return join(self.root, *parts)

    def exists(self, *parts: str) -> bool:
        return exists(self.url(*parts))

    def listdir(self, *parts: str) -> list[str]:
        return listdir(self.url(*parts))

    def check(self, write: bool = True, what: str = "root") -> "Storage":
        """Fail early, with one clear ``StorageError`` naming the root, when it cannot be used.

        s3://: the bucket must exist and the credentials must be accepted (endpoint and keys come
        from the AWS variables; the keys are never shown). Local: the root must be a directory
        (created when missing) that this process can write (``write``) or read. ``what`` names
        the root in the message (e.g. ``"--root"``)."""
        if self.remote:
            _check_bucket(self.root, what)
            return self
        path = Path(self.root)
        if path.exists() and not path.is_dir():
            raise StorageError(f"{what} {self.root}: is a file, not a directory")
        if not path.exists():
            if not write:
                raise StorageError(f"{what} {self.root}: does not exist")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"{what} {self.root}: cannot be created "
                                   f"({exc.strerror or exc})") from None
        if not write:
            if not os.access(path, os.R_OK):
                raise StorageError(f"{what} {self.root}: not readable by this user")
            return self
        probe = path / f".ial-write-check-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"{what} {self.root}: not writable "
                               f"({exc.strerror or type(exc).__name__})") from None
        return self


def check_file_target(url: str, what: str) -> None:
    """Fail early, with one ``StorageError`` naming ``what``, when a file cannot be written at
    ``url`` (a plot, say): its directory is checked as a root is (``Storage.check``: created
    when missing, writable, the bucket there), and ``url`` must not be a directory."""
    parent = posixpath.dirname(url) if is_remote(url) else os.path.dirname(url) or "."
    Storage(parent).check(what=f"{what}'s directory")
    if isdir(url):
        raise StorageError(f"{what} {url}: is a directory, not a file")


def _check_bucket(url: str, what: str) -> None:
    """Raise StorageError unless the bucket of ``url`` exists and accepts our credentials."""
    fs, path = filesystem(url)
    bucket = path.split("/", 1)[0]
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the default S3 endpoint"
    try:
        fs.ls(bucket)
    except FileNotFoundError:
        raise StorageError(f"{what} {url}: bucket '{bucket}' does not exist at {endpoint} "
                           f"(create it, or fix the bucket name)") from None
    except PermissionError as exc:
        code = (getattr(exc.__cause__, "response", None) or {}).get("Error", {}).get("Code", "")
        raise StorageError(f"{what} {url}: access to bucket '{bucket}' refused at {endpoint}"
                           f"{f' ({code})' if code else ''}: check the credentials in "
                           f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS profile") from None
    except Exception as exc:  # unreachable endpoint, DNS, TLS, ...
        raise StorageError(f"{what} {url}: cannot reach {endpoint}: "
                           f"{type(exc).__name__}: {str(exc)[:200]}") from None


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def isdir(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.isdir(path)


def listdir(url: str) -> list[str]:
    """Full URLs of the entries directly under ``url`` (empty when it does not exist), sorted."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        return []
    names = fs.ls(path, detail=False)
    proto = url.split("://", 1)[0] + "://" if is_remote(url) else ""
    return sorted(proto + n if proto and not n.startswith(proto) else n for n in names)


def glob(url_pattern: str) -> list[str]:
    fs, path = filesystem(url_pattern)
    proto = url_pattern.split("://", 1)[0] + "://" if is_remote(url_pattern) else ""
    return sorted(proto + p for p in fs.glob(path))


def open_url(url: str, mode: str = "rb", **kwargs) -> IO:
    """Open a URL for reading (writers use ``atomic_write``)."""
    return fsspec.open(str(url), mode, **kwargs).open()


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    return fs.cat_file(path)


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def remove(url: str, recursive: bool = False) -> None:
    fs, path = filesystem(url)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


@contextlib.contextmanager
def atomic_write(url: str, mode: str = "wb") -> Iterator[IO]:
    """Write ``url`` so that readers see either the old content or the whole new file.

    Yields a file object opened with ``mode`` (``"w"`` or ``"wb"``). On an exception nothing is
    left under ``url`` (nor under a visible temporary name).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports 'w' and 'wb', not {mode!r}")
    url = str(url)
    encoding = None if "b" in mode else "utf-8"
    if is_remote(url):
        fs, path = filesystem(url)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix("upload"))
        os.close(fd)
        try:
            with open(tmp, mode, encoding=encoding) as f:
                yield f
            fs.put_file(tmp, path)
        finally:
            os.unlink(tmp)
        return
    target = url[len("file://"):] if url.startswith("file://") else url
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sha256(url: str) -> str:
    """Hex sha256 of a file's content (local path or URL), streamed in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open_url(url) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Every temporary file/folder the project makes is named ``ial-<kind>-<pid>-<random>`` in the system
# temp dir, so one left by a killed process (its pid gone) can be told apart and removed.
_TEMP_NAME = re.compile(r"^ial-(?P<kind>[a-z]+)-(?P<pid>\d+)-")


def temp_prefix(kind: str) -> str:
    """Prefix for ``tempfile.mkstemp``/``mkdtemp`` of this process: ``ial-<kind>-<pid>-``."""
    return f"ial-{kind}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_orphan_temps(min_age: float = 0.0, directory: str | None = None) -> int:
    """Remove temporaries (``ial-<kind>-<pid>-*``) of processes that no longer run (a killed
    ingest's clip folders, a killed writer's upload files), if older than ``min_age`` s. Returns
    how many were removed. Temporaries of live processes are never touched."""
    directory = directory or tempfile.gettempdir()
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    now = time.time()
    for name in names:
        m = _TEMP_NAME.match(name)
        if not m or int(m.group("pid")) == os.getpid() or pid_alive(int(m.group("pid"))):
            continue
        path = os.path.join(directory, name)
        try:
            if now - os.path.getmtime(path) < min_age:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed


def write_bytes(url: str, data: bytes) -> None:
    with atomic_write(url, "wb") as f:
        f.write(data)


def write_text(url: str, text: str) -> None:
    with atomic_write(url, "w") as f:
        f.write(text)


def upload_file(local_path: str, url: str) -> None:
    """Copy a finished local file to ``url`` atomically (rename locally, one PUT on S3)."""
    if is_remote(url):
        fs, path = filesystem(url)
        fs.put_file(local_path, path)
        return
    with atomic_write(url, "wb") as out, open(local_path, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)


@contextlib.contextmanager
def local_copy(url: str) -> Iterator[str]:
    """A local filesystem path holding ``url``'s content (downloaded to a temp file if remote)."""
    if not is_remote(url):
        yield url[len("file://"):] if url.startswith("file://") else url
        return
    fs, path = filesystem(url)
    suffix = posixpath.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix("download"), suffix=suffix)
    os.close(fd)
    try:
        fs.get_file(path, tmp)
        yield tmp
    finally:
        os.unlink(tmp)
