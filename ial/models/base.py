"""What every separator shares: the output dataclass, the base class, the visual front end.

Shapes use B = mixtures in the batch, N = sources (visual queries) per mixture, K = frames per
clip, C×H×W = a frame feature map, F = 256 log-frequency bins, T = STFT frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ial import signal
from ial.models.config import ModelConfig


@dataclass
class SeparationOutput:
    """What a separator returns.

    mask: (B, N, 256, T) ≥ 0 — ratio mask on the log grid, in [0, 1] but for ``ial_cms`` with
      ``mask_activation: relu`` (the authors' unbounded IRM head) (``sop``: the sigmoid of
      ``logits``; its ``mask_threshold`` binarises it after unwarping, at test time).
    logits: (B, N, 256, T) the score map before the mask head, or None.
    visual_embedding: (B, N, D, H, W) L2-normalised visual map in the common space, or None.
    audio_embedding: (B, N, D) L2-normalised audio embedding of each separated source, or None.
    localization: (B, N, H, W) sounding-object map (A→V attention), or None.
    class_logits: (B, N, n_classes) class scores of each visual query (``n_classes`` > 0), or None.
    """

    mask: torch.Tensor
    logits: torch.Tensor | None = None
    visual_embedding: torch.Tensor | None = None
    audio_embedding: torch.Tensor | None = None
    localization: torch.Tensor | None = None
    class_logits: torch.Tensor | None = None


class VisualFrontend(nn.Module):
    """Visual input → one pooled feature map per source.

    "features" mode: stored maps pass through, their first ``cfg.input_channels`` channels: shards
    featurized with ``low_level_features`` pack the layer-2 maps after the layer-4 channels, and
    a model without the ``deeplab`` head (``low_level_channels: 0``) reads layer 4 only.
    "frames" mode: ImageNet-normalised frames go through the project's ResNet-18 trunk (dilated
    layer4, stride 16); frozen unless ``train_visual_trunk`` (a frozen trunk gets no gradients
    and stays in eval mode).

    Shape: (B, N, K, C, H, W) features or (B, N, K, 3, H', W') frames → (B, N, C, H, W).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.mode = cfg.visual_input
        self.frame_pool = cfg.frame_pool
        self.trainable = cfg.train_visual_trunk
        self.cfg = cfg
        self.trunk: nn.Module | None = None
        if self.mode == "frames":
            from ial.models.resnet18 import FEATURE_CHANNELS, build_trunk

            if cfg.visual_channels != FEATURE_CHANNELS:
                raise ValueError(f"visual_input 'frames' gives {FEATURE_CHANNELS} channels; "
                                 f"set visual_channels: {FEATURE_CHANNELS}")
            self.trunk, self.weights_description = build_trunk(cfg.visual_weights)
            for p in self.trunk.parameters():
                p.requires_grad_(self.trainable)

    def train(self, mode: bool = True) -> "VisualFrontend":
        super().train(mode)
        if self.trunk is not None and not self.trainable:
            self.trunk.eval()  # frozen BatchNorm statistics
        return self

    def maps(self, visual: torch.Tensor) -> torch.Tensor:
        """Per-frame feature maps, not pooled. Shape: (B, N, K, ...) → (B, N, K, C, H, W)."""
        if visual.ndim != 6:
            raise ValueError(f"visual must be (B, N, K, C, H, W), got {tuple(visual.shape)}")
        B, N, K = visual.shape[:3]
        if self.trunk is None:
            problem = self.cfg.feature_channels_problem(visual.shape[3])
            if problem:
                raise ValueError(problem)
            return visual[:, :, :, :self.cfg.input_channels]
        flat = visual.reshape(B * N * K, *visual.shape[3:])
        if self.trainable:
            maps = self.trunk(flat)
        else:
            with torch.no_grad():
                maps = self.trunk(flat)
        return maps.reshape(B, N, K, *maps.shape[1:])

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        visual = self.maps(visual)
        if self.frame_pool == "max":
            return visual.amax(dim=2)
        return visual.mean(dim=2)


def pad_frames(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int]:
    """Zero-pad the last (time) axis to a multiple of ``multiple``; returns (padded, original T)."""
    T = x.shape[-1]
    pad = (-T) % multiple
    return (F.pad(x, (0, pad)) if pad else x), T


class Separator(nn.Module):
    """Base class: ``forward(mix_mag, visual) -> SeparationOutput``.

    mix_mag: (B, 256, T) warped LINEAR magnitude of the mixture (``ial.signal.log_magnitude``);
    the network takes log(magnitude) itself. visual: (B, N, K, C, H, W) stored frame features
    (or frames in "frames" mode). Any T works: it is padded inside and the mask cropped back.
    """

    # Optimizer groups: group name → attributes whose parameters it holds; every other trainable
    # parameter is in DEFAULT_GROUP. The DeepSpeed JSON's "param_groups" sets each group's lr etc.
    PARAM_GROUPS: dict[str, tuple[str, ...]] = {}
    DEFAULT_GROUP = "all"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimizer group (``PARAM_GROUPS``, rest ``DEFAULT_GROUP``);
        empty groups left out."""
        groups: dict[str, list[nn.Parameter]] = {}
        seen: set[int] = set()
        for name, attrs in self.PARAM_GROUPS.items():
            for attr in attrs:
                obj = getattr(self, attr)
                params = [obj] if isinstance(obj, nn.Parameter) else list(obj.parameters())
                for p in params:
                    if p.requires_grad and id(p) not in seen:
                        groups.setdefault(name, []).append(p)
                        seen.add(id(p))
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in seen]
        if rest:
            groups[self.DEFAULT_GROUP] = rest
        return groups

    @staticmethod
    def log_input(mix_mag: torch.Tensor) -> torch.Tensor:
        """(B, 256, T) linear magnitude → (B, 1, 256, T) log magnitude."""
        if mix_mag.ndim != 3 or mix_mag.shape[1] != signal.LOG_BINS:
            raise ValueError(f"mix_mag must be (B, {signal.LOG_BINS}, T), "
                             f"got {tuple(mix_mag.shape)}")
        return signal.network_input(mix_mag).unsqueeze(1)

    def forward(self, mix_mag: torch.Tensor, visual: torch.Tensor) -> SeparationOutput:
        raise NotImplementedError
