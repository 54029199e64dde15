"""Frames at fixed times: one ffmpeg pass decodes the video up to the last time, keeps the first
frame at or after each time (``select``), scales the short side to ``size`` px, centre-crops
``size``×``size`` and pipes raw RGB; PIL encodes the JPEGs that shards store.

One sequential pass (stopping after the last frame) is cheaper than K input seeks, each of which
decodes from the previous keyframe: clips often have a single keyframe.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ial.media import run_ffmpeg


def select_expression(times: list[float]) -> str:
    """ffmpeg ``select`` expression keeping the first frame with timestamp >= each time (s)."""
    return "+".join(f"gte(t,{t:.6f})*(isnan(prev_selected_t)+lt(prev_selected_t,{t:.6f}))"
                    for t in sorted(times))


def extract_frames(path: str, times: list[float], size: int) -> np.ndarray:
    """RGB frames of a local video at ``times`` (s, ascending), short side scaled to ``size`` then
    centre-cropped.

    Shape: → (K, size, size, 3) uint8. Raises RuntimeError when a time has no frame (the video
    is shorter, has no video stream, or two times fall on the same frame).
    """
    if list(times) != sorted(times):
        raise ValueError(f"frame times must be ascending, got {list(times)}")
    graph = (f"select='{select_expression(times)}',"
             f"scale={size}:{size}:force_original_aspect_ratio=increase:flags=bilinear,"
             f"crop={size}:{size},setsar=1")
    # passthrough: no frames duplicated to fill the timestamp gaps; stop after K frames
    proc = run_ffmpeg(["-threads", "1", "-i", path, "-an", "-sn", "-dn", "-vf", graph,
                       "-fps_mode", "passthrough", "-frames:v", str(len(times)),
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
