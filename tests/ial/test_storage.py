import os

import pytest

from ial import storage
from ial.storage import Storage, atomic_write


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a" / "file.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(str(target)) as f:
            f.write(b"half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert os.listdir(target.parent) == []


def test_atomic_write_replaces_whole(tmp_path):
    target = tmp_path / "f.txt"
    storage.write_text(str(target), "old")
    with atomic_write(str(target), "w") as f:
        f.write("new")
        assert target.read_text() == "old"  # readers see the old file until commit
    assert target.read_text() == "new"


def test_local_root_urls(tmp_path):
    root = Storage(tmp_path)
    storage.write_bytes(root.url("x", "y.bin"), b"1")
    assert root.exists("x", "y.bin")
    assert root.listdir("x") == [str(tmp_path / "x" / "y.bin")]


def test_s3_root_round_trip(s3_root):
    root = Storage(s3_root)
    assert root.remote
    url = root.url("clips", "a.txt")
    storage.write_text(url, "hello")
    assert storage.read_text(url) == "hello"
    assert storage.exists(url)
    assert root.listdir("clips") == [url]
    with pytest.raises(ValueError):
        with atomic_write(root.url("clips", "b.txt"), "w") as f:
            f.write("partial")
            raise ValueError("boom")
    assert not storage.exists(root.url("clips", "b.txt"))


def test_sha256_local_and_s3(tmp_path, s3_root):
    import hashlib

    data = b"x" * (3 << 20)
    expected = hashlib.sha256(data).hexdigest()
    local = tmp_path / "blob.bin"
    local.write_bytes(data)
    assert storage.sha256(str(local)) == expected
    remote = Storage(s3_root).url("blob.bin")
    storage.write_bytes(remote, data)
    assert storage.sha256(remote) == expected
