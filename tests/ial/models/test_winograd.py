"""Winograd F(4x4, 3x3) convolution against torch's direct convolution (float64 reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ial.models.winograd import native_available, winograd_conv3x3, winograd_weight

PATHS = [False, pytest.param(True, marks=pytest.mark.skipif(
    not native_available(), reason="no C compiler: native transforms not built"))]


@pytest.mark.parametrize("b,c_in,c_out,h,w,dilation", [
    (2, 8, 5, 7, 7, 1),     # one tile plus a partial one
    (1, 4, 3, 1, 1, 1),     # smaller than a tile
    (2, 8, 8, 16, 16, 1),   # whole tiles
    (3, 6, 4, 5, 9, 2),     # dilated, odd sizes: phases of different lengths
    (2, 16, 16, 14, 14, 2),  # ResNet layer4 at 224 px (dilation 2)
    (2, 8, 8, 15, 15, 2),   # layer4 at 240 px
    (1, 3, 2, 13, 6, 3),    # any dilation
])
@pytest.mark.parametrize("use_native", PATHS)
def test_matches_direct_convolution(b, c_in, c_out, h, w, dilation, use_native):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c_in, h, w, generator=gen)
    weight = torch.randn(c_out, c_in, 3, 3, generator=gen)
    bias = torch.randn(c_out, generator=gen)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=dilation, dilation=dilation)
    got = winograd_conv3x3(x.permute(0, 2, 3, 1).contiguous(), winograd_weight(weight), bias,
                           dilation, use_native=use_native)
    assert got.shape == (b, h, w, c_out) and got.is_contiguous()
    err = (got.permute(0, 3, 1, 2).double() - ref).abs().max() / ref.abs().max()
    assert err < 2e-5, float(err)


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="3, 3"):
        winograd_weight(torch.zeros(4, 4, 5, 5))
    with pytest.raises(ValueError, match="expected input"):
        winograd_conv3x3(torch.zeros(1, 4, 4, 3), winograd_weight(torch.zeros(2, 4, 3, 3)))


@pytest.mark.parametrize("use_native", PATHS)
def test_residual_and_relu(use_native):
    """The ResNet block tail: relu(conv + bias + residual), fused in the native path."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 11, 6, generator=gen)
    weight = torch.randn(5, 6, 3, 3, generator=gen)
    bias = torch.randn(5, generator=gen)
    residual = torch.randn(2, 9, 11, 5, generator=gen)
    ref = F.conv2d(x.permute(0, 3, 1, 2).double(), weight.double(), bias.double(), padding=2,
                   dilation=2).permute(0, 2, 3, 1) + residual.double()
    got = winograd_conv3x3(x, winograd_weight(weight), bias, 2, residual=residual, relu=True,
                           use_native=use_native)
    assert float((got.double() - ref.clamp(min=0)).abs().max() / ref.abs().max()) < 2e-5
    assert (got >= 0).all() and (got == 0).any()
    with pytest.raises(ValueError, match="residual must have shape"):
        winograd_conv3x3(x, winograd_weight(weight), residual=residual[:, :4],
                         use_native=use_native)


@pytest.mark.skipif(not native_available(), reason="no C compiler: native transforms not built")
def test_native_threads_split_tiles_identically():
    """With several torch threads the C transforms split the tiles between threads: same bits."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 28, 28, 16, generator=gen)
    u = winograd_weight(torch.randn(16, 16, 3, 3, generator=gen))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = winograd_conv3x3(x, u, use_native=True)
        torch.set_num_threads(3)
        three = winograd_conv3x3(x, u, use_native=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)


@pytest.mark.skipif(not native_available(), reason="no C compiler: native transforms not built")
def test_native_inside_and_outside_inference_mode():
    """The per-thread workspace is a normal tensor: a conv under inference_mode and one under
    autograd's normal mode afterwards both work (an inference tensor could not be written
    outside inference mode)."""
    x = torch.randn(1, 8, 8, 4)
    u = winograd_weight(torch.randn(4, 4, 3, 3))
    with torch.inference_mode():
        a = winograd_conv3x3(x, u, use_native=True)
    b = winograd_conv3x3(x, u, use_native=True)
    assert torch.equal(a, b)
