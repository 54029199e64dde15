"""Visual heads by name (``VISUAL_HEADS``): a pooled frame-feature map → the D-dim common space.

- ``conv`` (ours, the default): 3×3 conv + BN + ReLU + 1×1 conv on the layer-4 map (stride 16,
  14×14 at 224 px). Needs only the layer-4 features the shards have always stored.
- ``deeplab`` (the authors' ``Deeplabv3plus`` + ``common_space_mlp``): ASPP on layer 4 (a 1×1 and
  three 3×3 branches with dilations 3/6/9, plus image pooling; ``aspp_channels`` each → concat →
  1×1 → D, BN, ReLU), upsampled to the layer-2 map (stride 8, 28×28 at 224 px) and fused with it
  (layer 2 reduced by a 1×1 conv to ``low_level_reduced`` channels, ReLU, BN; concat; 3×3 conv →
  D, ReLU, BN), then the common-space MLP (1×1, ReLU, BN, 1×1). The frozen ResNet-18 is not part of
  it: its layer-4 and layer-2 maps come from the shards (featurize with
  ``low_level_features: true``), packed in one tensor — the layer-2 map space-to-depth by
  ``low_level_upscale`` after the layer-4 channels — so every batch keeps one (K, C, H, W) shape.

Shape: (M, C_in, H, W) → (M, D, H', W') (not normalised; the separator L2-normalises).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ial.models.config import ModelConfig
from ial.registry import Registry

VISUAL_HEADS = Registry("visual head")


@VISUAL_HEADS.register("conv")
class ConvHead(nn.Sequential):
    """3×3 conv-BN-ReLU-1×1 conv on the layer-4 map. Shape: (M, C, H, W) → (M, D, H, W)."""

    def __init__(self, cfg: ModelConfig):
        d = cfg.embed_dim
        super().__init__(nn.Conv2d(cfg.visual_channels, d, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(d), nn.ReLU(), nn.Conv2d(d, d, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x[:, :self[0].in_channels])


def _branch(cin: int, cout: int, kernel: int, dilation: int) -> nn.Sequential:
    """One ASPP branch: conv (no bias) → BN → LeakyReLU (authors' ``_ASPPModule``)."""
    pad = 0 if kernel == 1 else dilation
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, 1, pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.LeakyReLU())


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (authors' ``ASPP``). Shape: (M, C, H, W) → (M, out, H, W)."""

    def __init__(self, cin: int, width: int, dilations: list[int], out: int):
        super().__init__()
        kernels = [1] + [3] * (len(dilations) - 1)
        self.branches = nn.ModuleList(_branch(cin, width, k, d)
                                      for k, d in zip(kernels, dilations))
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, width, 1,
                                        bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.project = nn.Sequential(nn.Conv2d(width * (len(dilations) + 1), out, 1, bias=False),
                                     nn.BatchNorm2d(out), nn.ReLU())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="bilinear",
                               align_corners=True)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


@VISUAL_HEADS.register("deeplab")
class DeepLabHead(nn.Module):
    """The authors' DeepLabv3+-style head (module docstring). Shape: (M, C + L, H, W) packed
    (layer 4, then layer 2 space-to-depth) → (M, D, H·r, W·r), r = ``low_level_upscale``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.low_level_channels <= 0:
            raise ValueError("visual_head 'deeplab' needs the layer-2 maps: set low_level_channels "
                             "(and featurize with low_level_features: true)")
        d, r = cfg.embed_dim, cfg.low_level_upscale
        self.deep_channels = cfg.visual_channels
        self.upscale = r
        low = cfg.low_level_channels // (r * r)
        self.aspp = ASPP(cfg.visual_channels, cfg.aspp_channels, cfg.aspp_dilations, d)
        self.reduce = nn.Sequential(nn.Conv2d(low, cfg.low_level_reduced, 1), nn.ReLU(),
                                    nn.BatchNorm2d(cfg.low_level_reduced))
        self.fuse = nn.Sequential(nn.Conv2d(d + cfg.low_level_reduced, d, 3, padding=1),
                                  nn.ReLU(), nn.BatchNorm2d(d))
        self.common = nn.Sequential(nn.Conv2d(d, d, 1), nn.ReLU(), nn.BatchNorm2d(d),
                                    nn.Conv2d(d, d, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = x[:, :self.deep_channels]
        shallow = F.pixel_shuffle(x[:, self.deep_channels:], self.upscale)
        up = F.interpolate(self.aspp(deep), size=shallow.shape[-2:], mode="bilinear",
                           align_corners=True)
        return self.common(self.fuse(torch.cat([up, self.reduce(shallow)], dim=1)))


def build_visual_head(cfg: ModelConfig) -> nn.Module:
    """The head named ``cfg.visual_head``."""
    return VISUAL_HEADS.get(cfg.visual_head)(cfg)


def pack_low_level(deep: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Layer-4 and layer-2 maps in one tensor: layer 2 space-to-depth to layer 4's size, after
    its channels. Shape: (M, C, h, w), (M, L, h·r, w·r) → (M, C + L·r², h, w)."""
    r = low.shape[-1] // deep.shape[-1]
    return torch.cat([deep, F.pixel_unshuffle(low, r)], dim=1)
