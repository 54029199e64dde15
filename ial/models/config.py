"""``ModelConfig``: which separator to build and its sizes (``configs/model/*.yaml``).

The defaults are the paper's size (DESIGN.md, authors' ``GeometricGANwAVC.yaml``); the demo config
(``configs/model/demo.yaml``) shrinks every width so a few minutes on 2 CPU cores train something.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ial.config import ConfigError


@dataclass
class ModelConfig:
    """Separator architecture. Fields prefixed ``sop_`` only matter for ``name: sop``."""

    # Registered model name: "ial_cms" (the paper's CMS separator) or "sop" (Sound of Pixels).
    name: str = "ial_cms"
    # Visual input: "features" = stored frozen ResNet-18 maps (B, N, K, C, H, W) from the shards;
    # "frames" = ImageNet-normalised frames (B, N, K, 3, H, W) through our own ResNet-18 trunk.
    visual_input: Literal["features", "frames"] = "features"
    # Channels C of the stored frame features (512 for ResNet-18 layer4).
    visual_channels: int = 512
    # "frames" mode only: train the ResNet-18 trunk (the paper freezes it: false).
    train_visual_trunk: bool = False
    # "frames" mode only: torchvision resnet18 .pth to load (null = seeded random init, said loudly).
    visual_weights: str | None = None
    # How the K frames of a clip are pooled into one map before the visual head. The paper uses one
    # frame/object crop per source; with K frames we take the temporal max as Sound of Pixels does.
    frame_pool: Literal["max", "mean"] = "max"

    # ial_cms: dimension D of the audio-visual common space (512 in the paper).
    embed_dim: int = 512
    # ial_cms: widths of the 4 ResNet-style audio encoder stages (paper: 64/128/256/512; the 7×7
    # stride-2 stem has the first width). Stem and stages each halve F and T: T is padded inside
    # to a multiple of 32.
    audio_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    # ial_cms: hidden width of the audio → common-space MLP (authors' a_common_mlp.hidden_dim).
    common_hidden: int = 512
    # ial_cms: initial slope of the learnable sigmoid over the A→V cosine map (our choice: the
    # authors' ParamSigmoid initial values are not in the released code).
    loc_sigmoid_scale: float = 5.0

    # sop: base width (ngf) of the 7-level audio U-Net (SoP: 64).
    sop_ngf: int = 64
    # sop: number of down/up levels of the U-Net (SoP: 7; T is padded to a multiple of 2**levels).
    sop_levels: int = 7
    # sop: number K of audio feature channels / visual channels of the linear synthesizer (SoP: 32).
    sop_k: int = 32

    def validate(self) -> None:
        from ial.models import MODELS

        if self.name not in MODELS:
            raise ConfigError("name", f"unknown model {self.name!r}; known: {', '.join(MODELS)}")
        if len(self.audio_channels) != 4 or any(c <= 0 for c in self.audio_channels):
            raise ConfigError("audio_channels", "must be 4 positive widths, e.g. [64,128,256,512]")
        for name in ("visual_channels", "embed_dim", "common_hidden", "sop_ngf", "sop_k"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if not 2 <= self.sop_levels <= 8:
            raise ConfigError("sop_levels", "must be between 2 and 8")
