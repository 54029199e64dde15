"""Winograd F(4×4, 3×3) convolution for CPU inference (channels-last activations).

A 3×3, stride-1 convolution computes each 4×4 output tile from a 6×6 input tile with 36
multiplies per (input channel, output channel) pair instead of 144 (Lavin & Gray 2016,
arXiv:1509.09308, the F(4, 3) transforms with interpolation points 0, ±1, ±2, ∞):

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,     summed over input channels.

The channel sum is one GEMM per tile position (36 ``torch.mm`` calls, MKL: ``channel_gemms``).
A dilated convolution (dilation d, padding d) is the same 3×3 convolution applied to each of the
d×d polyphase sub-images x[r::d, s::d], done inside the tiling (no phase copies).

Two implementations of the tile transforms, the same arithmetic up to fp32 rounding:

- native (used when ``ial.native`` can build ``winograd_transforms.c``): one pass per transform
  in C over channel vectors (vectorised by the compiler), no padded copy, and bias + residual +
  ReLU applied while the outputs are written (the tail of a ResNet block);
- torch (the fallback where no C compiler is found, and a reference in tests): the transforms as
  dense GEMMs with the Kronecker products Bᵀ⊗Bᵀ and Aᵀ⊗Aᵀ over all tiles, plus pad/gather/
  scatter copies.

Accuracy: fp32 results differ from a direct convolution by ~1e-5 of the output's range per
layer (the direct one is ~2e-6 off an fp64 reference; a whole ResNet-18 trunk stays ~3e-6 off
fp64), far below the float16 that shards store features in.

Speed on one AVX2 core, batch 24 at 224 px (native / torch path / oneDNN direct convolution):
512-channel dilated layer4 conv ~90 / ~120 / ~320 ms (the GEMMs alone ~82 ms); 256 channels at
14 px ~27 / ~39 / ~58 ms; 128 channels at 28 px ~26 / ~40 / ~56 ms; 64 channels at 56 px
~35 / ~140 / ~60 ms (so layer1 is worth it only with the native transforms).
"""

from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from ial import native

TILE = 4  # output tile (m)
ALPHA = 6  # input tile (m + r - 1)

_BT = torch.tensor([[4, 0, -5, 0, 1, 0],
                    [0, -4, -4, 1, 1, 0],
                    [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0],
                    [0, 2, -1, -2, 1, 0],
                    [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
_G = torch.tensor([[1 / 4, 0, 0],
                   [-1 / 6, -1 / 6, -1 / 6],
                   [-1 / 6, 1 / 6, -1 / 6],
                   [1 / 24, 1 / 12, 1 / 6],
                   [1 / 24, -1 / 12, 1 / 6],
                   [0, 0, 1]], dtype=torch.float64)
_AT = torch.tensor([[1, 1, 1, 1, 1, 0],
                    [0, 1, -1, 2, -2, 0],
                    [0, 1, 1, 4, 4, 0],
                    [0, 1, -1, 8, -8, 1]], dtype=torch.float64)
# Row-major vec of a tile: vec(Bᵀ d B) = (Bᵀ ⊗ Bᵀ) vec(d), vec(Aᵀ m A) = (Aᵀ ⊗ Aᵀ) vec(m).
INPUT_TRANSFORM = torch.kron(_BT, _BT).float()  # (36, 36)
OUTPUT_TRANSFORM = torch.kron(_AT, _AT).float()  # (16, 36)


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """Transform 3×3 kernels once (in float64, then float32).

    Shape: (C_out, C_in, 3, 3) → (36, C_in, C_out).
    """
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"expected (C_out, C_in, 3, 3) kernels, got {tuple(weight.shape)}")
    u = _G @ weight.detach().to(torch.float64) @ _G.T  # (C_out, C_in, 6, 6)
    return u.reshape(weight.shape[0], weight.shape[1], ALPHA * ALPHA).permute(2, 1, 0) \
        .contiguous().to(torch.float32)


def winograd_conv3x3(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None,
                     dilation: int = 1, residual: torch.Tensor | None = None,
                     relu: bool = False, use_native: bool | None = None) -> torch.Tensor:
    """3×3 convolution, stride 1, padding = dilation ("same" size), on channels-last input,
    then ``+ residual`` and ReLU when given (the tail of a ResNet block, fused when native).

    ``u`` comes from ``winograd_weight``. ``use_native``: None uses the C transforms when they
    are available, False forces the torch path, True requires the C one. Shape: x (B, H, W, C_in)
    float32, u (36, C_in, C_out), residual (B, H, W, C_out) → (B, H, W, C_out), contiguous.
    Equals ``F.conv2d(x.permute(0, 3, 1, 2), w, bias, padding=dilation,
    dilation=dilation).permute(0, 2, 3, 1)`` (+ residual, ReLU) up to fp32 rounding.
    """
    if x.ndim != 4 or x.shape[3] != u.shape[1]:
        raise ValueError(f"expected input (B, H, W, {u.shape[1]}), got {tuple(x.shape)}")
    out_shape = (*x.shape[:3], u.shape[2])
    if residual is not None and tuple(residual.shape) != out_shape:
        raise ValueError(f"residual must have shape {out_shape}, got {tuple(residual.shape)}")
    lib = _kernels() if use_native is not False else None
    if use_native and lib is None:
        raise RuntimeError("native Winograd transforms unavailable (see the ial.native warning)")
    if lib is not None and x.dtype == u.dtype == torch.float32:
        return _conv_native(lib, x, u, bias, int(dilation), residual, relu)
    out = _conv_torch(x, u, bias, int(dilation))
    if residual is not None:
        out += residual
    return F.relu_(out) if relu else out


def channel_gemms(v: torch.Tensor, u: torch.Tensor,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """The channel sums, one GEMM per tile position, into ``out`` (any float32 tensor with
    enough elements) or a new tensor. Shape: v (36, P, C_in), u (36, C_in, C_out) →
    (36, P, C_out). 36 ``torch.mm`` calls rather than one ``torch.bmm``: on CPU the batched call
    runs 64-256 channel shapes at about half MKL's GEMM speed (~16 vs ~34 GMAC/s for 64
    channels on one AVX2 core; ~42 vs ~44 at 512)."""
    shape = (v.shape[0], v.shape[1], u.shape[2])
    m = torch.empty(shape, dtype=v.dtype) if out is None else out.view(shape)
    for k in range(v.shape[0]):
        torch.mm(v[k], u[k], out=m[k])
    return m


_WORKSPACES = threading.local()


def _workspace(name: str, numel: int) -> torch.Tensor:
    """A float32 scratch tensor of ``numel`` elements kept per thread between calls.

    The tile tensors of a 64-channel 56 px layer are ~43 MB for a batch of 24 frames, above
    glibc's largest mmap threshold (32 MiB): allocated per call, each would be a fresh mmap whose
    pages fault in again every time (~20 ms per conv on one core). Reusing one buffer per thread
    avoids that; it stays as large as the largest layer seen (the peak RSS had it anyway)."""
    cache = _WORKSPACES.__dict__
    buf = cache.get(name)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: usable inside and outside
            buf = cache[name] = torch.empty(numel)
    return buf[:numel]


def _tiles(h: int, w: int, d: int) -> tuple[int, int]:
    """Tile rows/columns per polyphase image: each of the d×d phases of a dilation-d conv is a
    (ceil(H/d), ceil(W/d)) image, covered by 4×4 output tiles."""
    return -(-(-(-h // d)) // TILE), -(-(-(-w // d)) // TILE)


_TRANSFORMS_C = Path(__file__).with_name("winograd_transforms.c")


def native_available() -> bool:
    """Whether the C transforms could be built and loaded here (see ``ial.native``)."""
    return _kernels() is not None


def _kernels() -> ctypes.CDLL | None:
    lib = native.load(str(_TRANSFORMS_C))
    if lib is not None and not hasattr(lib, "_ial_typed"):
        ptr, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.winograd_input_transform.argtypes = [ptr] * 4 + [i64] * 9
        lib.winograd_output_transform.argtypes = [ptr] * 4 + [ctypes.c_int, ptr] + [i64] * 9
        lib.winograd_input_transform.restype = lib.winograd_output_transform.restype = None
        lib._ial_typed = True
    return lib


def _over_tiles(call, n_tiles: int, scratch_floats: int) -> None:
    """Run ``call(scratch, p0, p1)`` over the tiles, split between torch's intra-op threads
    (ctypes releases the GIL during the call); one scratch buffer per part."""
    parts = max(1, min(torch.get_num_threads(), n_tiles // 64))
    bounds = [n_tiles * i // parts for i in range(parts + 1)]
    scratch = [torch.empty(scratch_floats) for _ in range(parts)]
    if parts == 1:
        call(scratch[0], 0, n_tiles)
        return
    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(call, scratch, bounds[:-1], bounds[1:]))


def _conv_native(lib: ctypes.CDLL, x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None,
                 d: int, residual: torch.Tensor | None, relu: bool) -> torch.Tensor:
    x = x.contiguous()
    u = u.contiguous()
    b, h, w, c = x.shape
    c_out = u.shape[2]
    n_h, n_w = _tiles(h, w, d)
    n_tiles = b * d * d * n_h * n_w
    v = _workspace("v", ALPHA * ALPHA * n_tiles * c).view(ALPHA * ALPHA, n_tiles, c)
    zero = torch.zeros(c)
    _over_tiles(lambda tmp, p0, p1: lib.winograd_input_transform(
        x.data_ptr(), v.data_ptr(), zero.data_ptr(), tmp.data_ptr(), b, h, w, c, d, n_h, n_w,
        p0, p1), n_tiles, ALPHA * ALPHA * c)
    m = channel_gemms(v, u, _workspace("m", ALPHA * ALPHA * n_tiles * c_out))
    out = torch.empty(b, h, w, c_out)
    bias = bias.to(torch.float32).contiguous() if bias is not None else None
    residual = residual.to(torch.float32).contiguous() if residual is not None else None
    _over_tiles(lambda tmp, p0, p1: lib.winograd_output_transform(
        m.data_ptr(), out.data_ptr(), bias.data_ptr() if bias is not None else None,
        residual.data_ptr() if residual is not None else None, int(relu), tmp.data_ptr(),
        b, h, w, c_out, d, n_h, n_w, p0, p1), n_tiles, 28 * c_out)
    return out


def _conv_torch(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None,
                d: int) -> torch.Tensor:
    """The transforms as dense GEMMs over all tiles (see the module docstring)."""
    b, h, w, c = x.shape
    c_out = u.shape[2]
    n_h, n_w = _tiles(h, w, d)
    rows, cols = TILE * n_h + 2, TILE * n_w + 2  # padded phase size
    xp = F.pad(x, (0, 0, d, d * cols - w - d, d, d * rows - h - d))  # (B, d*rows, d*cols, C)
    tiles = (xp.view(b, rows, d, cols, d, c)
             .unfold(1, ALPHA, TILE).unfold(3, ALPHA, TILE))  # (B, nH, d, nW, d, C, 6, 6)
    d_mat = tiles.permute(6, 7, 2, 4, 0, 1, 3, 5).reshape(ALPHA * ALPHA, -1)  # (36, P*C)
    v = (INPUT_TRANSFORM @ d_mat).view(ALPHA * ALPHA, -1, c)  # (36, P, C)
    m = channel_gemms(v, u)
    y = (OUTPUT_TRANSFORM @ m.view(ALPHA * ALPHA, -1)).view(
        TILE, TILE, d, d, b, n_h, n_w, c_out)  # (a, b', r, s, B, nH, nW, C_out)
    # output row = d * (4 * tile + a) + r
    out = y.permute(4, 5, 0, 2, 6, 1, 3, 7).reshape(b, d * TILE * n_h, d * TILE * n_w, c_out)
    out = out[:, :h, :w].contiguous()
    if bias is not None:
        out += bias
    return out
