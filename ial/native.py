"""Build a small C source of this package into a shared library once, and load it with ctypes.

Used for CPU kernels that PyTorch has no fused form of (``ial.models.winograd``'s tile
transforms). No torch headers, no pybind: plain C with pointer + size arguments, compiled by the
system C compiler (``$CC`` or ``cc``) in well under a second, then cached:

- cache: ``$IAL_NATIVE_DIR`` or ``~/.cache/ial/native``; the file name carries a hash of the
  source, the flags and the compiler, so an edited source or another CPU level rebuilds;
- flags: ``-O3 -fPIC -shared``, plus ``-mavx2 -mfma`` where torch reports an AVX2/AVX-512 CPU
  (never ``-march=native``: a cache shared between hosts must not hold code a host cannot run);
- concurrent builders (two Dask workers) each compile in a private temporary directory and
  commit the library with ``ial.storage.upload_file`` (atomic rename), so a reader only ever sees
  a whole library.

Returns None (and logs one warning naming the reason) when there is no compiler or the build
fails: callers keep a pure-torch path for that case.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from ial.storage import upload_file

log = logging.getLogger("ial.native")


def cache_dir() -> Path:
    return Path(os.environ.get("IAL_NATIVE_DIR") or Path.home() / ".cache" / "ial" / "native")


def compile_flags() -> list[str]:
    import torch

    flags = ["-O3", "-fPIC", "-shared", "-std=c99"]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def _compiler() -> list[str] | None:
    cc = shlex.split(os.environ.get("CC", "cc"))
    return cc if cc and shutil.which(cc[0]) else None


def _compiler_version(cc: list[str]) -> str:
    try:
        return subprocess.run([*cc, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def build(source: Path) -> Path:
    """Compile ``source`` (a C file) into the cache, unless already there; returns the library.

    Raises RuntimeError with the compiler's message when there is no compiler or it fails.
    """
    cc = _compiler()
    if cc is None:
        raise RuntimeError(f"no C compiler ({os.environ.get('CC', 'cc')!r} not on PATH)")
    flags = compile_flags()
    text = source.read_bytes()
    key = hashlib.sha256(text + repr((flags, _compiler_version(cc))).encode()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)  # an unwritable cache fails before cc runs
    with tempfile.TemporaryDirectory(prefix="ial-native-") as work:
        built = os.path.join(work, target.name)
        proc = subprocess.run([*cc, *flags, str(source), "-o", built], capture_output=True,
                              text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cc)} failed on {source.name}: "
                               f"{proc.stderr.strip()[-500:]}")
        upload_file(built, str(target))  # whole, or not there
    return target


@functools.lru_cache(maxsize=None)
def load(source: str) -> ctypes.CDLL | None:
    """The library built from the C file ``source`` (cached per process), or None with a
    warning when it cannot be built or loaded."""
    try:
        return ctypes.CDLL(str(build(Path(source))))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log.warning("native kernels from %s unavailable, using the pure-torch path: %s",
                    Path(source).name, exc)
        return None
