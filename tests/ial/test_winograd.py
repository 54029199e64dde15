"""Winograd F(4x4, 3x3) convolution against torch's direct convolution (float64 reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ial.models.winograd import winograd_conv3x3, winograd_weight


@pytest.mark.parametrize("b,c_in,c_out,h,w,dilation", [
    (2, 8, 5, 7, 7, 1),     # one tile plus a partial one
    (1, 4, 3, 1, 1, 1),     # smaller than a tile
    (2, 8, 8, 16, 16, 1),   # whole tiles
    (3, 6, 4, 5, 9, 2),     # dilated, odd sizes: phases of different lengths
    (2, 16, 16, 14, 14, 2),  # ResNet layer4 at 224 px (dilation 2)
    (2, 8, 8, 15, 15, 2),   # layer4 at 240 px
    (1, 3, 2, 13, 6, 3),    # any dilation
])
def test_matches_direct_convolution(b, c_in, c_out, h, w, dilation):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c_in, h, w, generator=gen)
    weight = torch.randn(c_out, c_in, 3, 3, generator=gen)
    bias = torch.randn(c_out, generator=gen)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=dilation, dilation=dilation)
    got = winograd_conv3x3(x.permute(0, 2, 3, 1).contiguous(), winograd_weight(weight), bias,
                           dilation)
    assert got.shape == (b, h, w, c_out) and got.is_contiguous()
    err = (got.permute(0, 3, 1, 2).double() - ref).abs().max() / ref.abs().max()
    assert err < 2e-5, float(err)


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="3, 3"):
        winograd_weight(torch.zeros(4, 4, 5, 5))
    with pytest.raises(ValueError, match="expected input"):
        winograd_conv3x3(torch.zeros(1, 4, 4, 3), winograd_weight(torch.zeros(2, 4, 3, 3)))
