"""Frames at fixed times: one ffmpeg process seeks to each time, scales the short side to ``size``
px, centre-crops ``size``×``size`` and pipes raw RGB; PIL encodes the JPEGs that shards store."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ial.media import run_ffmpeg


def extract_frames(path: str, times: list[float], size: int) -> np.ndarray:
    """RGB frames of a local video at ``times`` (s), short side scaled to ``size`` then centre-cropped.

    Shape: → (K, size, size, 3) uint8. Raises RuntimeError when a time has no frame (the video
    is shorter, or has no video stream).
    """
    args: list[str] = []
    for t in times:  # input seeking (-ss before -i) is frame-accurate when decoding
        args += ["-ss", f"{t:.3f}", "-i", path]
    chains = [
        f"[{i}:v:0]scale={size}:{size}:force_original_aspect_ratio=increase:flags=bilinear,"
        f"crop={size}:{size},setsar=1,format=rgb24,trim=end_frame=1[f{i}]"
        for i in range(len(times))
    ]
    joined = "".join(f"[f{i}]" for i in range(len(times)))
    graph = ";".join(chains) + f";{joined}concat=n={len(times)}:v=1:a=0[out]"
    proc = run_ffmpeg([*args, "-filter_complex", graph, "-map", "[out]", "-an",
                       "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
    frame_bytes = size * size * 3
    got = len(proc.stdout) // frame_bytes
    if got != len(times):
        raise RuntimeError(f"expected {len(times)} frames at {list(times)} s, decoded {got}")
    return np.frombuffer(proc.stdout, dtype=np.uint8).reshape(len(times), size, size, 3)


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB → JPEG bytes (baseline, 4:2:0, deterministic)."""
    buf = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes → (H, W, 3) uint8 RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
