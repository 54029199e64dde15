"""Winograd F(4×4, 3×3) convolution for CPU inference (channels-last activations).

A 3×3, stride-1 convolution computes each 4×4 output tile from a 6×6 input tile with 36
multiplies per (input channel, output channel) pair instead of 144 (Lavin & Gray 2016,
arXiv:1509.09308, the F(4, 3) transforms with interpolation points 0, ±1, ±2, ∞):

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,     summed over input channels.

Here the channel sum is one batched GEMM per tile position (36 of them, ``torch.bmm``) and the
input/output transforms are small dense GEMMs over all tiles at once (the Kronecker products
Bᵀ⊗Bᵀ and Aᵀ⊗Aᵀ), so every FLOP-heavy step runs in MKL. A dilated convolution (dilation d,
padding d) is the same 3×3 convolution applied to each of the d×d polyphase sub-images
x[r::d, s::d], done here inside the tiling (no phase copies).

Accuracy: fp32 results differ from a direct convolution by ~1e-5 of the output's range per
layer (the direct one is ~2e-6 off an fp64 reference; a whole ResNet-18 trunk stays ~3e-6 off
fp64), far below the float16 that shards store features in.

Speed on one CPU core (AVX2, batch 24): ~1.4-1.9x a oneDNN direct convolution for 128-512
channels on 7-28 px maps; not faster for 64 channels at 56 px (kept direct by callers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
                     dilation: int = 1) -> torch.Tensor:
    """3×3 convolution, stride 1, padding = dilation ("same" size), on channels-last input.

    ``u`` comes from ``winograd_weight``. Shape: x (B, H, W, C_in) float32, u (36, C_in, C_out)
    → (B, H, W, C_out), contiguous. Equals ``F.conv2d(x.permute(0, 3, 1, 2), w, bias,
    padding=dilation, dilation=dilation).permute(0, 2, 3, 1)`` up to fp32 rounding.
    """
    if x.ndim != 4 or x.shape[3] != u.shape[1]:
        raise ValueError(f"expected input (B, H, W, {u.shape[1]}), got {tuple(x.shape)}")
    d = int(dilation)
    b, h, w, c = x.shape
    c_out = u.shape[2]
    # each of the d×d phases is a (ceil(H/d), ceil(W/d)) image padded by 1: tiles of 4 outputs
    n_h, n_w = -(-(-(-h // d)) // TILE), -(-(-(-w // d)) // TILE)
    rows, cols = TILE * n_h + 2, TILE * n_w + 2  # padded phase size
    xp = F.pad(x, (0, 0, d, d * cols - w - d, d, d * rows - h - d))  # (B, d*rows, d*cols, C)
    tiles = (xp.view(b, rows, d, cols, d, c)
             .unfold(1, ALPHA, TILE).unfold(3, ALPHA, TILE))  # (B, nH, d, nW, d, C, 6, 6)
    d_mat = tiles.permute(6, 7, 2, 4, 0, 1, 3, 5).reshape(ALPHA * ALPHA, -1)  # (36, P*C)
    v = (INPUT_TRANSFORM @ d_mat).view(ALPHA * ALPHA, -1, c)  # (36, P, C)
    m = torch.bmm(v, u)  # (36, P, C_out)
    y = (OUTPUT_TRANSFORM @ m.view(ALPHA * ALPHA, -1)).view(
        TILE, TILE, d, d, b, n_h, n_w, c_out)  # (a, b', r, s, B, nH, nW, C_out)
    # output row = d * (4 * tile + a) + r
    out = y.permute(4, 5, 0, 2, 6, 1, 3, 7).reshape(b, d * TILE * n_h, d * TILE * n_w, c_out)
    out = out[:, :h, :w].contiguous()
    if bias is not None:
        out += bias
    return out
