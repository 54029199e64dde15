"""The frames column of the shard contract: JPEG encoding of the frames shards store (featurize)
and decoding them back to pixels (featurize, the training loader and evaluation in frames mode)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB → JPEG bytes (baseline, 4:2:0, deterministic)."""
    buf = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes → (H, W, 3) uint8 RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
