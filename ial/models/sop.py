"""``sop``: the Sound of Pixels baseline (Zhao et al., ECCV 2018), the paper's reference row.

Follows the SoP reference implementation (hangzhaomit/Sound-of-Pixels): a 7-level U-Net on the
log magnitude (BN on the input; down 4×4 stride-2 convs with LeakyReLU; up ReLU, ×2 bilinear
upsample, 3×3 conv) gives K audio feature channels; the frame net maps each frame's feature map to
K channels (3×3 conv) and max-pools over frames and space together, sigmoid; a linear synthesizer
(per-channel scale, sum over K, bias) gives one mask logit map per source. Training target:
binary masks ``mag_n > 0.5·|mix|`` on the log grid with weighted BCE (``ial.method.losses``).
``mask`` is the sigmoid; at test time it is unwarped to the linear grid and then binarised at
0.5 (``mask_threshold``, applied by ``ial.separate.waveforms``), as SoP's ``calc_metrics``.
"""

from __future__ import annotations

import torch
from torch import nn

from ial.models.base import SeparationOutput, Separator, VisualFrontend, pad_frames
from ial.models.config import ModelConfig
from ial.models.registry import MODELS


class UnetBlock(nn.Module):
    """One U-Net level (SoP's ``UnetBlock``): down (4×4 stride-2 conv), inner block, up (ReLU, ×2
    bilinear upsample, 3×3 conv), skip concatenation. Down: LeakyReLU 0.2 + BN except outermost;
    up: BN except outermost (whose conv has a bias).

    Shape: (B, outer, F, T) → (B, 2·outer, F, T) for inner levels, (B, out, F, T) outermost.
    """

    def __init__(self, outer: int, inner: int, input_nc: int | None = None,
                 submodule: nn.Module | None = None, outermost: bool = False,
                 innermost: bool = False):
        super().__init__()
        self.outermost = outermost
        input_nc = outer if input_nc is None else input_nc
        inner_out = inner if innermost else 2 * inner  # the submodule concatenates its skip
        down = nn.Conv2d(input_nc, inner, 4, 2, 1, bias=False)
        up = [nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
              nn.Conv2d(inner_out, outer, 3, padding=1, bias=outermost)]
        if outermost:
            layers = [down, submodule, *up]
        elif innermost:
            layers = [nn.LeakyReLU(0.2), down, *up, nn.BatchNorm2d(outer)]
        else:
            layers = [nn.LeakyReLU(0.2), down, nn.BatchNorm2d(inner), submodule, *up,
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

    # SoP's create_optimizer: sound net and synthesizer at lr_sound / lr_synthesizer, the frame
    # net's trunk at lr_frame, its fc at lr_sound
    PARAM_GROUPS = {"synthesizer": ("scale", "bias"), "frame_fc": ("frame_fc",),
                    "frame_trunk": ("visual",)}
    DEFAULT_GROUP = "sound"

    # SoP binarises the predicted mask at test time after unwarping it to the linear grid
    # (ial.signal.apply_mask, used by ial.separate.waveforms)
    mask_threshold = 0.5

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
        # Frame net (SoP's forward_multiframe): the 3×3 fc on each frame's map, then max over
        # frames and space together.
        maps = self.visual.maps(visual)  # (B, N, Kf, C, H, W)
        img = self.frame_fc(maps.flatten(0, 2))  # (B*N*Kf, K, H, W)
        img = img.reshape(B * N, maps.shape[2], *img.shape[1:]).amax(dim=(1, 3, 4))  # (B*N, K)
        img = torch.sigmoid(img).reshape(B, N, -1)
        logits = torch.einsum("bnk,bkft->bnft", img * self.scale, audio) + self.bias
        return SeparationOutput(mask=torch.sigmoid(logits), logits=logits)
