"""ial.native: build a C source once into the cache, load it; a clear None when it cannot."""

from __future__ import annotations

import logging
import shutil

import pytest

from ial import native

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")


def test_builds_once_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("IAL_NATIVE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "add_one.c"
    source.write_text("int add_one(int x) { return x + 1; }\n")
    first = native.build(source)
    assert first.parent == tmp_path / "cache" and first.name.startswith("add_one-")
    mtime = first.stat().st_mtime_ns
    assert native.build(source) == first and first.stat().st_mtime_ns == mtime  # cached
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left
    assert native.load(str(source)).add_one(41) == 42
    source.write_text("int add_one(int x) { return x + 2; }\n")  # an edit rebuilds
    assert native.build(source) != first


def test_compile_error_names_the_file_and_load_falls_back(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IAL_NATIVE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "broken.c"
    source.write_text("int broken( { }\n")
    with pytest.raises(RuntimeError, match="broken.c"):
        native.build(source)
    with caplog.at_level(logging.WARNING, logger="ial.native"):
        assert native.load(str(source)) is None
    assert "pure-torch path" in caplog.text and "broken.c" in caplog.text
    assert not list((tmp_path / "cache").iterdir())  # nothing half-written


def test_no_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("IAL_NATIVE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "no-such-compiler-ial")
    source = tmp_path / "x.c"
    source.write_text("int x;\n")
    with pytest.raises(RuntimeError, match="no C compiler"):
        native.build(source)
