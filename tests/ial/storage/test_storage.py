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


def test_check_names_a_root_that_cannot_be_used(tmp_path):
    from ial.storage import StorageError

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StorageError, match=f"--root {a_file}: is a file, not a directory"):
        Storage(a_file).check(what="--root")
    with pytest.raises(StorageError, match="not writable"):  # even root cannot write in /proc
        Storage("/proc").check(what="--root")
    fresh = tmp_path / "new" / "root"
    assert Storage(fresh).check().root == str(fresh) and fresh.is_dir()  # created
    assert os.listdir(fresh) == []  # the write probe leaves nothing behind


def test_check_names_a_missing_bucket(s3_root):
    from ial.storage import StorageError

    bucket = s3_root.split("/")[2]
    assert Storage(s3_root).check().root == s3_root
    with pytest.raises(StorageError, match=f"bucket '{bucket}-x' does not exist"):
        Storage(f"s3://{bucket}-x/ial").check()


def test_a_file_target_is_checked_where_it_will_be_written(tmp_path, s3_root):
    from ial.storage import StorageError, check_file_target

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StorageError, match=f"^--plot's directory {a_file}: is a file"):
        check_file_target(str(a_file / "p.png"), "--plot")
    with pytest.raises(StorageError, match=f"^--plot {tmp_path}: is a directory, not a file"):
        check_file_target(str(tmp_path), "--plot")
    check_file_target(str(tmp_path / "new" / "p.png"), "--plot")
    assert (tmp_path / "new").is_dir()  # its directory is made, as a root's is
    check_file_target(f"{s3_root}/plots/p.png", "--plot")
    bucket = s3_root.split("/")[2]
    with pytest.raises(StorageError, match=f"bucket '{bucket}-x' does not exist"):
        check_file_target(f"s3://{bucket}-x/p.png", "--plot")


def test_orphan_temporaries_of_dead_processes_are_swept(tmp_path):
    import subprocess
    import sys
    import time

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    old = time.time() - 3600
    orphan = tmp_path / f"ial-ingest-{dead}-abc"
    orphan.mkdir()
    (orphan / "section.mp4").write_bytes(b"x")
    mine = tmp_path / f"ial-ingest-{os.getpid()}-def"  # this process is alive: kept
    mine.mkdir()
    young = tmp_path / f"ial-upload-{dead}-ghi"  # too young to be sure: kept
    young.write_bytes(b"y")
    other = tmp_path / "not-ours"
    other.mkdir()
    for p in (orphan, mine, other):
        os.utime(p, (old, old))
    assert storage.sweep_orphan_temps(min_age=60, directory=str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, young.name, other.name])
