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
    # "frames" mode only: torchvision resnet18 .pth to load (null = seeded random init, said
    # loudly).
    visual_weights: str | None = None
    # How the K frames of a clip are pooled into one map before the visual head. The paper uses one
    # frame/object crop per source; with K frames we take the temporal max as Sound of Pixels does.
    frame_pool: Literal["max", "mean"] = "max"

    # ial_cms: dimension D of the audio-visual common space (512 in the paper).
    embed_dim: int = 512
    # ial_cms: the visual head (ial.models.visual_heads): "conv" (ours: 3×3 conv head on the
    # layer-4 map, which every shard carries) or "deeplab" (the authors': ASPP on layer 4 fused
    # with layer 2 at stride 8; needs shards featurized with low_level_features: true).
    visual_head: Literal["conv", "deeplab"] = "conv"
    # Extra channels after the layer-4 ones in the stored features: the layer-2 map space-to-depth
    # by low_level_upscale (ResNet-18: 128 × 2 × 2 = 512 with the dilated trunk). 0: none.
    low_level_channels: int = 0
    low_level_upscale: int = 2
    # deeplab head: ASPP branch width and dilations, layer-2 reduction (authors: 256, [1,3,6,9],
    # 48).
    aspp_channels: int = 256
    aspp_dilations: list[int] = field(default_factory=lambda: [1, 3, 6, 9])
    low_level_reduced: int = 48
    # ial_cms: widths of the 4 ResNet-style audio encoder stages (paper: 64/128/256/512; the 7×7
    # stride-2 stem has the first width). Stem and stages each halve F and T: T is padded inside
    # to a multiple of 32.
    audio_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    # ial_cms: hidden width of the audio → common-space MLP (authors' a_common_mlp.hidden_dim).
    common_hidden: int = 512
    # ial_cms: the learnable sigmoid over the A→V cosine map, sigmoid(w·cos + b), and its initial
    # w, b (authors' ParamSigmoid: w = 1, b = −0.2).
    loc_sigmoid_weight: float = 1.0
    loc_sigmoid_bias: float = -0.2
    # ial_cms: the mask head on the score map (ial.models.ial_cms.MASK_ACTIVATIONS): "sigmoid", a
    # ratio mask in [0, 1] (the authors' "IBM" head), or "relu", relu(score + 0.5), an unbounded
    # ratio mask that can keep more than the mixture where sources cancel (the authors' "IRM" head
    # with IRM_bias, which both of their configs use).
    mask_activation: Literal["sigmoid", "relu"] = "sigmoid"
    # ial_cms: > 0 adds a linear class head on the max-pooled visual embedding, (B, N, D) →
    # (B, N, n_classes), for the method's auxiliary lambda_cls loss; the dataset's class count.
    # Not in the paper (docs/model.md); unused at inference. 0: no head.
    n_classes: int = 0

    # sop: base width (ngf) of the 7-level audio U-Net (SoP: 64).
    sop_ngf: int = 64
    # sop: number of down/up levels of the U-Net (SoP: 7; T is padded to a multiple of 2**levels).
    sop_levels: int = 7
    # sop: number K of audio feature channels / visual channels of the linear synthesizer (SoP: 32).
    sop_k: int = 32

    @property
    def input_channels(self) -> int:
        """Channels of the stored frame features this model takes (layer 4 + packed layer 2)."""
        return self.visual_channels + self.low_level_channels

    def feature_channels_problem(self, channels: int) -> str | None:
        """Why stored frame features of ``channels`` channels do not fit this model, or None when
        they do: it reads their first ``input_channels`` (more is fine: layer-2 maps packed after
        layer 4, which a model without the deeplab head leaves). A "frames" model reads pictures
        through its own trunk, not stored features."""
        if self.visual_input == "frames" or channels >= self.input_channels:
            return None
        return (f"the model reads {self.input_channels} visual feature channels (layer 4 + "
                f"packed layer 2), the features have {channels}")

    def validate(self) -> None:
        from ial.models import MODELS

        if self.name not in MODELS:
            raise ConfigError("name", f"unknown model {self.name!r}; known: {', '.join(MODELS)}")
        if self.visual_head == "deeplab" and self.low_level_channels <= 0:
            raise ConfigError("low_level_channels", "the deeplab visual head needs the layer-2 "
                              "maps: e.g. 512 (ResNet-18 layer 2, 128 channels, space-to-depth 2) "
                              "and shards featurized with low_level_features: true")
        if self.low_level_channels % (self.low_level_upscale ** 2):
            raise ConfigError("low_level_channels", "must be a multiple of low_level_upscale²")
        if not self.aspp_dilations or self.aspp_channels <= 0 or self.low_level_reduced <= 0:
            raise ConfigError("aspp_dilations", "the deeplab head needs >= 1 dilation and "
                                                "positive widths")
        if len(self.audio_channels) != 4 or any(c <= 0 for c in self.audio_channels):
            raise ConfigError("audio_channels", "must be 4 positive widths, e.g. [64,128,256,512]")
        for name in ("visual_channels", "embed_dim", "common_hidden", "sop_ngf", "sop_k"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.n_classes < 0:
            raise ConfigError("n_classes", "must be >= 0 (0: no class head)")
        if self.name == "sop" and self.mask_activation != "sigmoid":
            raise ConfigError("mask_activation", "sop's masks are sigmoids (its threshold "
                                                 "binarises them); relu is an ial_cms head")
        if not 2 <= self.sop_levels <= 8:
            raise ConfigError("sop_levels", "must be between 2 and 8")
