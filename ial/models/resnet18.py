"""Frozen ResNet-18 trunk for frame features, with torchvision-compatible parameter names.

torchvision does not import beside the CPU torch build this project pins (DEPENDENCIES.md), so the
few layers needed are defined here. The state_dict keys are exactly torchvision's ``resnet18``
(``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``
...), so a user's torchvision ImageNet weights file (``resnet18-f37072fd.pth``) loads unchanged with
``load_torchvision_weights``; the classifier (``fc.*``) is ignored.

The trunk is conv1 … layer4 (no pooling / fc). With ``dilate_layer4=True`` (the default, as the
Sound-of-Pixels / IAL visual nets do) layer4 keeps stride 1 and uses dilation 2 instead, so the
output stride is 16: a 224×224 frame gives a (512, 14, 14) map; without dilation it is stride 32
(512, 7, 7).

Without weights the trunk is randomly initialised from a fixed seed (deterministic); callers must
say so loudly (``weights_description`` returns ``"none (random init)"``).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ial.models.winograd import native_available, winograd_conv3x3, winograd_weight

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_CHANNELS = 512
RANDOM_INIT = "none (random init)"


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same attribute names)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, first_dilation: int | None = None):
        super().__init__()
        d1 = first_dilation or dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=d1, dilation=d1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18Trunk(nn.Module):
    """ResNet-18 conv1..layer4, output stride 16 (``dilate_layer4``) or 32.

    Shape: forward x (B, 3, H, W) ImageNet-normalised → (B, 512, H/16, W/16) (or /32).
    """

    def __init__(self, dilate_layer4: bool = True):
        super().__init__()
        self.dilate_layer4 = dilate_layer4
        self.output_stride = 16 if dilate_layer4 else 32
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(64, 64, stride=1, dilation=1)
        self.layer2 = self._layer(64, 128, stride=2, dilation=1)
        self.layer3 = self._layer(128, 256, stride=2, dilation=1)
        # Dilated layer4 as Sound of Pixels' ``_nostride_dilate(dilate=2)`` (used by IAL): every
        # stride-2 conv becomes stride 1 (the strided 3x3 keeps dilation 1), every other 3x3
        # conv gets dilation 2.
        if dilate_layer4:
            self.layer4 = self._layer(256, 512, stride=1, dilation=2, first_dilation=1)
        else:
            self.layer4 = self._layer(256, 512, stride=2, dilation=1)

    @staticmethod
    def _layer(inplanes: int, planes: int, stride: int, dilation: int,
               first_dilation: int | None = None) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes))
        first = BasicBlock(inplanes, planes, stride, dilation, downsample, first_dilation)
        return nn.Sequential(first, BasicBlock(planes, planes, 1, dilation))

    def forward(self, x: torch.Tensor, low_level: bool = False):
        """Shape: (B, 3, H, W) → layer 4 (B, 512, H/16, W/16) (or /32); with ``low_level`` also
        layer 2 (B, 128, H/8, W/8), as a pair (the authors' DeepLab head fuses both)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        low = self.layer2(x)
        deep = self.layer4(self.layer3(low))
        return (deep, low) if low_level else deep


def init_weights(model: nn.Module, seed: int) -> None:
    """Deterministic random init (torchvision's scheme: Kaiming-normal convs, BN weight 1, bias
    0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)


def load_torchvision_weights(model: ResNet18Trunk, path: str) -> str:
    """Load a torchvision ``resnet18`` state_dict file into ``model``.

    Accepts a bare state_dict or a dict with a ``state_dict``/``model`` entry; ``fc.*`` and
    ``num_batches_tracked`` are ignored. Raises a ``ConfigError`` on ``visual_weights`` naming
    ``path`` (and the keys) when it is no state_dict, any trunk parameter is missing, a key is
    unexpected, or a shape differs. Returns a description
    ``"<file name> sha256:<first 12 hex>"`` for stats and shard metadata.
    """
    from ial.models.export import load_failure
    from ial.storage import exists, local_copy, sha256

    if not exists(str(path)):
        raise _not_weights(f"file not found: {path}")
    with local_copy(str(path)) as local:
        digest = sha256(local)[:12]
        try:
            state = torch.load(local, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise _not_weights(f"{path}: not a torchvision resnet18 weights file (torch.load "
                               f"cannot read it: {load_failure(exc)})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise _not_weights(f"{path}: not a state_dict (got {type(state).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items()
             if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise _not_weights(
            f"{path}: not a torchvision resnet18 state_dict: "
            f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} "
            f"({len(unexpected)})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise _not_weights(f"{path}: parameter {k} has shape {tuple(v.shape)}, "
                               f"expected {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=False)
    return f"{os.path.basename(str(path))} sha256:{digest}"


def _not_weights(message: str) -> Exception:
    from ial.errors import ConfigError

    return ConfigError("visual_weights", message)


def build_trunk(weights: str | None = None, dilate_layer4: bool = True,
                seed: int = 0) -> tuple[ResNet18Trunk, str]:
    """A frozen trunk in eval mode and its weights description (``RANDOM_INIT`` without weights)."""
    model = ResNet18Trunk(dilate_layer4=dilate_layer4)
    if weights:
        description = load_torchvision_weights(model, weights)
    else:
        init_weights(model, seed)
        description = RANDOM_INIT
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, description


def imagenet_normalize(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames → ImageNet-normalised float tensor.

    Shape: (B, H, W, 3) uint8 → (B, 3, H, W) float32.
    """
    x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (B, H, W, 3), got {tuple(x.shape)}")
    # One float copy normalised in place along the contiguous channel axis, then viewed as
    # (B, 3, H, W) (channels-last strides, as the ResNet's oneDNN convolutions prefer). Same
    # operations in the same order as ``(x / 255 - mean) / std``: bit-identical, ~2x faster.
    x = x.to(torch.float32, copy=True).div_(255.0)  # copy: never the caller's tensor
    x.sub_(torch.tensor(IMAGENET_MEAN)).div_(torch.tensor(IMAGENET_STD))
    return x.permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------ CPU inference

def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm folded into the preceding bias-free conv: ``(weight, bias)``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.view(-1, 1, 1, 1)  # new tensors: the trunk's stay untouched
    return weight.detach(), (bn.bias - bn.running_mean * scale).detach()


class FoldedConv(nn.Module):
    """Conv + folded BN for inference on channels-last activations: Winograd F(4×4, 3×3) when
    ``winograd`` and the conv is 3×3 stride 1, oneDNN direct convolution otherwise.

    Shape: forward x (B, C, H, W) channels-last float32 → (B, C_out, H', W') channels-last.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, winograd: bool):
        super().__init__()
        weight, bias = fold_batchnorm(conv, bn)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.winograd = (winograd and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                         and conv.padding == conv.dilation and conv.dilation[0] == conv.dilation[1])
        self.register_buffer("bias", bias)
        if self.winograd:
            self.register_buffer("u", winograd_weight(weight))
        else:
            self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                relu: bool = False) -> torch.Tensor:
        """conv(x) + bias, then ``+ residual`` and ReLU when asked (fused in the Winograd path).
        Shape: residual like the output."""
        if self.winograd:
            # (B, C, H, W) channels-last is a contiguous (B, H, W, C) view, and back
            res = None if residual is None else residual.permute(0, 2, 3, 1)
            y = winograd_conv3x3(x.permute(0, 2, 3, 1), self.u, self.bias, self.dilation[0],
                                 residual=res, relu=relu)
            return y.permute(0, 3, 1, 2)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        if residual is not None:
            y += residual
        return F.relu_(y) if relu else y


class InferenceTrunk(nn.Module):
    """A ``ResNet18Trunk`` compiled for CPU inference: every BatchNorm folded into its conv,
    activations channels-last, and the 3×3 stride-1 convs of layer1-4 (including the dilated
    layer4) computed with Winograd F(4×4, 3×3) (``ial.models.winograd``), each block's residual
    add and ReLU fused into its second conv; the stem, the stride-2 and the 1×1 convs use oneDNN.
    Without the native Winograd transforms (no C compiler) layer1 stays on oneDNN too.

    One AVX2 core, 24 frames at 224 px: ~0.85 s (native transforms) / ~1.1 s (torch fallback)
    vs ~1.9-2.1 s for the eager trunk; outputs within ~1e-5 of the eager trunk's range (fp32
    rounding; features are stored as float16). A snapshot: later changes to ``trunk``'s weights
    are not seen.

    Shape: forward x (B, 3, H, W) ImageNet-normalised → (B, 512, H/16, W/16) (or /32), contiguous.
    """

    LAYER2_LAST = 3  # blocks 0-1: layer1, 2-3: layer2, 4-5: layer3, 6-7: layer4

    def __init__(self, trunk: ResNet18Trunk):
        super().__init__()
        self.output_stride = trunk.output_stride
        self.stem = FoldedConv(trunk.conv1, trunk.bn1, winograd=False)
        # layer1 (64 channels at 56 px) pays only with the C transforms; the torch path's
        # transform GEMMs and copies make it slower than oneDNN there
        layer1_winograd = native_available()
        blocks = []
        for index, layer in enumerate((trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4)):
            winograd = index > 0 or layer1_winograd
            for block in layer:
                down = block.downsample
                blocks.append(nn.ModuleDict({
                    "conv1": FoldedConv(block.conv1, block.bn1, winograd),
                    "conv2": FoldedConv(block.conv2, block.bn2, winograd),
                    **({"downsample": FoldedConv(down[0], down[1], winograd=False)}
                       if down is not None else {})}))
        self.blocks = nn.ModuleList(blocks)
        self.eval()  # weights are buffers: nothing here is trainable

    def forward(self, x: torch.Tensor, low_level: bool = False):
        """As ``ResNet18Trunk.forward`` (with ``low_level``: the pair layer 4, layer 2)."""
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(F.relu_(self.stem(x)), 3, 2, 1)
        low = None
        for index, block in enumerate(self.blocks):
            identity = block["downsample"](x) if "downsample" in block else x
            x = block["conv2"](block["conv1"](x, relu=True), residual=identity, relu=True)
            if index == self.LAYER2_LAST:
                low = x
        return (x.contiguous(), low.contiguous()) if low_level else x.contiguous()
