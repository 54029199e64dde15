"""``sop``: the Sound of Pixels baseline (Zhao et al., ECCV 2018), the paper's reference row.

Follows the SoP reference implementation (hangzhaomit/Sound-of-Pixels): a 7-level U-Net on the
log magnitude (BN on the input, 4×4 stride-2 convs, LeakyReLU down / ReLU up) gives K audio
feature channels; the frame net maps each frame's feature map to K channels (3×3 conv), max-pools
spatially and over the K frames, sigmoid; a linear synthesizer (per-channel scale, sum over K,
bias) gives one mask logit map per source. Training target: binary masks with weighted BCE
(``ial.method.losses.weighted_bce``). Convention (SoP): ``mask`` is the sigmoid while training and is
binarised at 0.5 in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from ial.models.base import SeparationOutput, Separator, VisualFrontend, pad_frames
from ial.models.config import ModelConfig
from ial.models.registry import MODELS


class UnetBlock(nn.Module):
    """One U-Net level (SoP's UnetBlock): down conv, inner block, up conv, skip concatenation.

    Shape: (B, outer, F, T) → (B, 2·outer, F, T) for inner levels, (B, out, F, T) outermost.
    """

    def __init__(self, outer: int, inner: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False,
                 innermost: bool = False):
        super().__init__()
        self.outermost = outermost
        input_nc = outer if input_nc is None else input_nc
        down = nn.Conv2d(input_nc, inner, 4, 2, 1, bias=False)
        if outermost:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1)
            layers = [down, submodule, nn.ReLU(), up]
        elif innermost:
            up = nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False)
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, nn.BatchNorm2d(outer)]
        else:
            up = nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=False)
            layers = [nn.LeakyReLU(0.2), down, nn.BatchNorm2d(inner), submodule, nn.ReLU(), up,
                      nn.BatchNorm2d(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


def sop_unet(ngf: int, levels: int, out_channels: int) -> nn.Module:
    """SoP's ``Unet(fc_dim=K, num_downs=levels, ngf)``: inner widths ngf·(1, 2, 4, 8, 8, ...).

    Shape: (B, 1, F, T) → (B, out_channels, F, T), F and T multiples of 2**levels.
    """
    inner = [ngf * min(2 ** i, 8) for i in range(levels)]
    block = UnetBlock(inner[-2], inner[-1], innermost=True)
    for i in range(levels - 2, 0, -1):
        block = UnetBlock(inner[i - 1], inner[i], submodule=block)
    return UnetBlock(out_channels, inner[0], input_nc=1, submodule=block, outermost=True)


@MODELS.register("sop")
class SoundOfPixels(Separator):
    """Sound of Pixels separator. Forward contract in ``Separator``; returns mask and logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.levels = cfg.sop_levels
        self.input_norm = nn.BatchNorm2d(1)
        self.unet = sop_unet(cfg.sop_ngf, cfg.sop_levels, cfg.sop_k)
        self.visual = VisualFrontend(cfg)
        self.frame_fc = nn.Conv2d(cfg.visual_channels, cfg.sop_k, 3, 1, 1)
        self.scale = nn.Parameter(torch.ones(cfg.sop_k))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, mix_mag: torch.Tensor, visual: torch.Tensor) -> SeparationOutput:
        B, N = mix_mag.shape[0], visual.shape[1]
        x, T = pad_frames(self.log_input(mix_mag), 2 ** self.levels)
        audio = self.unet(self.input_norm(x))[..., :T]  # (B, K, 256, T)
        # Frame net: max over frames happens in the front end (frame_pool), then over space.
        fmap = self.visual(visual)  # (B, N, C, H, W)
        img = self.frame_fc(fmap.flatten(0, 1)).amax(dim=(-2, -1))  # (B*N, K)
        img = torch.sigmoid(img).reshape(B, N, -1)
        logits = torch.einsum("bnk,bkft->bnft", img * self.scale, audio) + self.bias
        prob = torch.sigmoid(logits)
        mask = prob if self.training else (prob > 0.5).to(prob.dtype)
        return SeparationOutput(mask=mask, logits=logits)
