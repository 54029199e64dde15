"""What the realistic corpus (``ial.demo.realistic_corpus``) needs from the machine: fluidsynth
and a General-MIDI soundfont (Debian packages) and music21 (pip); ``missing_tools`` says what is
absent, ``install_tools`` installs it."""

from __future__ import annotations

import os
import shutil
import subprocess

SOUNDFONTS = ("/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/sounds/sf2/FluidR3_GM.sf2",
              "/usr/share/sounds/sf2/default-GM.sf2")
DEBIAN_PACKAGES = ("fluidsynth", "timgm6mb-soundfont")


def missing_tools(soundfont: str | None = None) -> list[str]:
    """What this machine lacks to build the corpus (empty when everything is there)."""
    missing = []
    if shutil.which("fluidsynth") is None:
        missing.append("fluidsynth (Debian package)")
    if not (soundfont or default_soundfont()):
        missing.append("a General-MIDI soundfont (Debian package timgm6mb-soundfont)")
    try:
        import music21  # noqa: F401
    except ImportError:
        missing.append("music21 (pip)")
    return missing


def install_tools() -> None:
    """Install what the corpus needs when missing: Debian's fluidsynth and timgm6mb-soundfont
    (apt-get, needs root) and music21 (pip, into this Python). Raises RuntimeError naming what
    could not be installed."""
    import sys

    missing = missing_tools()
    if any("fluidsynth" in m or "soundfont" in m for m in missing):
        if os.geteuid() != 0:
            raise RuntimeError("installing " + " ".join(DEBIAN_PACKAGES) + " needs root "
                               "(apt-get); run as root or install them yourself")
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *DEBIAN_PACKAGES]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            subprocess.run(cmd, check=True, capture_output=True)
    if any("music21" in m for m in missing):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "music21"], check=True)
    still = missing_tools()
    if still:
        raise RuntimeError("still missing after set-up: " + ", ".join(still))


def default_soundfont() -> str | None:
    """The first of ``SOUNDFONTS`` that exists on this machine, or None."""
    return next((p for p in SOUNDFONTS if os.path.exists(p)), None)
