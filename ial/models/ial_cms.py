"""``ial_cms``: the IAL paper's cross-modal separator (CMS).

Architecture (DESIGN.md "Method"; authors' code ZhenkaiLin/IAL-CMS, files
``AVModule/AVModule_visual_related_fa_separation.py`` and ``SeperateNet/SeparateNet.py``):

1. Visual: per source, frame features (K, C, H, W) pooled over K (``frame_pool``), then a head
   (``visual_head``: ``conv``, 3×3 conv + BN + ReLU + 1×1 conv on layer 4; or the authors'
   ``deeplab``, ASPP + layer-2 fusion at stride 8, ``ial.models.visual_heads``) to the D-dim
   common space, L2-normalised per location: ``fv`` (D, H, W).
2. Audio encoder (authors' UnetSeparator with ``resnet_encoder``): log magnitude (1, 256, T) → BN
   → 7×7 stride-2 stem (c0) → four ResNet stages of two basic blocks each (LeakyReLU 0.2), widths
   ``audio_channels`` (64/128/256/512), strides 1·2 each → bottleneck ``fa_mix`` (c3, F/32, T/32).
   T is padded inside to a multiple of 32.
3. CMS at the bottleneck, per source (authors' AVModule):
   - visual-related audio: ``fa = sep_mlp([fa_mix, maxpool(fv)])`` (1×1 convs);
   - audio to the common space: ``fa_com = l2norm(a_common_mlp(fa))``; source embedding
     ``a = l2norm(mean_FT fa_com)`` (used by L_av);
   - A→V spatial attention: ``loc = sigmoid(w·cos(fv, a) + b)`` (H, W), w, b learnable (1, −0.2);
     ``v = l1norm(Σ_HW loc · fv)``;
   - V→A channel attention: ``w = MLP(mean_FT(v · fa_com))`` with sigmoid; ``fa' = w·fa + fa``;
   - decoder input ``[v broadcast, fa']``, context vector ``[v, mean_FT fa']``.
4. Decoder (authors' UnetBlock): four levels of ×2 upsample, 3×3 conv, LeakyReLU, BN, AdaIN from
   the context vector, then concatenation with the encoder feature of that resolution; a last ×2
   upsample + 3×3 conv gives one score map; ``score·scale + bias`` → the mask head
   (``mask_activation``, ``MASK_ACTIVATIONS``) → ratio mask on the log grid (1, 256, T): a sigmoid
   (in [0, 1], the default, the authors' "IBM" head) or their "IRM" head relu(score + 0.5)
   (unbounded, what both of their configs use).

The audio encoder runs once per mixture; CMS and the decoder run once per source.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ial.models.base import Separator, SeparationOutput, VisualFrontend, pad_frames
from ial.models.config import ModelConfig
from ial.models.registry import MODELS
from ial.models.visual_heads import build_visual_head
from ial.registry import Registry


# The class head's input scale (``ModelConfig.n_classes``): the pooled embedding is unit-length, so
# at scale 1 the logits stay within ±‖w‖ and, at lr 1e-3, the cross-entropy barely fell in 600
# steps (2.08 → 1.63); 10 is the usual scale of a normalised-softmax ("cosine") classifier.
CLASS_LOGIT_SCALE = 10.0


# The mask heads by name (``ModelConfig.mask_activation``): score map → ratio mask.
MASK_ACTIVATIONS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("mask head")
MASK_ACTIVATIONS.register("sigmoid")(torch.sigmoid)  # in [0, 1]: the authors' "IBM" head


@MASK_ACTIVATIONS.register("relu")
def irm_head(score: torch.Tensor) -> torch.Tensor:
    """The authors' "IRM" mask head with IRM_bias: relu(score + 0.5), 0.5 at a zero score as the
    sigmoid is, unbounded above. Shape: any → the same."""
    return F.relu(score + 0.5)


class BasicBlock(nn.Module):
    """ResNet basic block (LeakyReLU 0.2) with a projection shortcut when the shape changes.

    Shape: (B, Cin, F, T) → (B, Cout, F/stride, T/stride).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        y = self.bn2(self.conv2(y))
        return F.leaky_relu(y + self.shortcut(x), 0.2)


def encoder_stage(cin: int, cout: int) -> nn.Sequential:
    """Two basic blocks, the first with stride 2 (authors' ``_make_encoder_block(blocks=2)``)."""
    return nn.Sequential(BasicBlock(cin, cout, 2), BasicBlock(cout, cout, 1))


class AdaIN(nn.Module):
    """Instance norm whose scale/shift come from a context vector.

    Shape: x (M, C, F, T), context (M, Dc) → (M, C, F, T).
    """

    def __init__(self, channels: int, context_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(context_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)  # starts as plain instance norm (scale 1, shift 0)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(context).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class UpBlock(nn.Module):
    """×2 upsample, 3×3 conv, LeakyReLU, BN, AdaIN(context), then concat the skip.

    Shape: x (M, Cin, f, t), skip (M, Cskip, 2f, 2t), context (M, Dc) → (M, Cout + Cskip, 2f, 2t).
    """

    def __init__(self, cin: int, cout: int, context_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.adain = AdaIN(cout, context_dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        y = self.adain(self.bn(F.leaky_relu(self.conv(x), 0.2)), context)
        return torch.cat([skip, y], dim=1)


class LearnableSigmoid(nn.Module):
    """sigmoid(w · x + b) with learnable w, b (authors' ParamSigmoid: w = 1, b = −0.2 at init).
    Shape preserved."""

    def __init__(self, weight: float = 1.0, bias: float = -0.2):
        super().__init__()
        # shape (1,), not 0-dim: DeepSpeed 0.19.8 cannot broadcast/clip 0-dim parameters
        self.weight = nn.Parameter(torch.full((1,), float(weight)))
        self.bias = nn.Parameter(torch.full((1,), float(bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.weight * x + self.bias)


class CMS(nn.Module):
    """Cross-modal separator interaction at the bottleneck (authors' AVModule).

    Shape: fa_mix (M, Ca, f, t) (mixture feature repeated per source), fv (M, D, H, W) →
    y (M, D + Ca, f, t), context (M, D + Ca), audio_embedding (M, D), localization (M, H, W).
    """

    def __init__(self, audio_dim: int, embed_dim: int, hidden: int,
                 sigmoid_init: tuple[float, float] = (1.0, -0.2)):
        super().__init__()
        ca, d = audio_dim, embed_dim
        self.sep_mlp = nn.Sequential(
            nn.Conv2d(ca + d, ca + d, 1), nn.LeakyReLU(0.2), nn.BatchNorm2d(ca + d),
            nn.Conv2d(ca + d, ca, 1), nn.LeakyReLU(0.2), nn.BatchNorm2d(ca))
        self.a_common_mlp = nn.Sequential(
            nn.Conv2d(ca, hidden, 1), nn.LeakyReLU(0.2), nn.BatchNorm2d(hidden),
            nn.Conv2d(hidden, d, 1))
        self.weight_mlp = nn.Sequential(
            nn.Linear(d, d), nn.LeakyReLU(0.2), nn.BatchNorm1d(d), nn.Linear(d, ca), nn.Sigmoid())
        self.loc_sigmoid = LearnableSigmoid(*sigmoid_init)

    def forward(self, fa_mix: torch.Tensor, fv: torch.Tensor):
        M, _, f, t = fa_mix.shape
        fv_pooled = fv.amax(dim=(-2, -1))  # (M, D)
        fa = self.sep_mlp(torch.cat([fa_mix, fv_pooled[:, :, None, None].expand(-1, -1, f, t)], 1))
        fa_com = F.normalize(self.a_common_mlp(fa), dim=1)  # (M, D, f, t)
        audio_emb = F.normalize(fa_com.mean(dim=(-2, -1)), dim=1)  # (M, D)
        # A→V spatial attention.
        cos_map = (fv * audio_emb[:, :, None, None]).sum(1)  # fv and audio_emb are unit: cosine
        loc = self.loc_sigmoid(cos_map)  # (M, H, W)
        v = F.normalize((loc.unsqueeze(1) * fv).sum(dim=(-2, -1)), p=1, dim=1)  # (M, D)
        # V→A channel attention.
        g = (v[:, :, None, None] * fa_com).mean(dim=(-2, -1))  # (M, D)
        w = self.weight_mlp(g)  # (M, Ca)
        fa_att = w[:, :, None, None] * fa + fa
        y = torch.cat([v[:, :, None, None].expand(-1, -1, f, t), fa_att], dim=1)
        context = torch.cat([v, fa_att.mean(dim=(-2, -1))], dim=1)
        return y, context, audio_emb, loc


@MODELS.register("ial_cms")
class IALCMS(Separator):
    """The CMS separator. See the module docstring; forward contract in ``Separator``."""

    STRIDE = 32  # stem /2 × four stride-2 stages
    # authors' get_opt_dict: the visual net at v_lr (1e-3), the separator at a_lr (1e-4)
    PARAM_GROUPS = {"visual": ("visual", "visual_head")}
    DEFAULT_GROUP = "audio"

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        c = list(cfg.audio_channels)
        d = cfg.embed_dim
        self.visual = VisualFrontend(cfg)
        self.visual_head = build_visual_head(cfg)
        self.input_norm = nn.BatchNorm2d(1)
        self.stem = nn.Sequential(nn.Conv2d(1, c[0], 7, 2, 3, bias=False), nn.BatchNorm2d(c[0]),
                                  nn.LeakyReLU(0.2))
        widths = [c[0]] + c
        self.encoder = nn.ModuleList(encoder_stage(widths[i], widths[i + 1]) for i in range(4))
        self.cms = CMS(c[3], d, cfg.common_hidden,
                       (cfg.loc_sigmoid_weight, cfg.loc_sigmoid_bias))
        ctx = d + c[3]
        # Decoder levels, deepest first: input width, output width; the skip (encoder stage 3,
        # 2, 1 output, then the stem) is concatenated after each level.
        skips = [c[2], c[1], c[0], c[0]]
        outs = [c[3], c[2], c[1], c[0]]
        ins = [d + c[3]] + [o + s for o, s in zip(outs[:-1], skips[:-1])]
        self.decoder = nn.ModuleList(UpBlock(i, o, ctx) for i, o in zip(ins, outs))
        self.out = nn.Conv2d(outs[-1] + skips[-1], 1, 3, 1, 1)
        self.score_scale = nn.Parameter(torch.ones(1))
        self.score_bias = nn.Parameter(torch.zeros(1))
        self.class_head = nn.Linear(d, cfg.n_classes) if cfg.n_classes > 0 else None
        self.mask_head = MASK_ACTIVATIONS.get(cfg.mask_activation)

    def forward(self, mix_mag: torch.Tensor, visual: torch.Tensor) -> SeparationOutput:
        B = mix_mag.shape[0]
        N = visual.shape[1]
        x, T = pad_frames(self.log_input(mix_mag), self.STRIDE)
        # Visual: (B, N, C, H, W) → common space (B*N, D, H, W).
        fv = F.normalize(self.visual_head(self.visual(visual).flatten(0, 1)), dim=1)
        # Audio encoder, once per mixture.
        h = self.stem(self.input_norm(x))
        feats = [h]
        for stage in self.encoder:
            h = stage(h)
            feats.append(h)
        bottleneck, skips = feats[-1], feats[-2::-1]  # skips: stage3, stage2, stage1, stem

        def per_source(t: torch.Tensor) -> torch.Tensor:  # (B, ...) → (B*N, ...)
            return t.unsqueeze(1).expand(B, N, *t.shape[1:]).flatten(0, 1)

        y, context, audio_emb, loc = self.cms(per_source(bottleneck), fv)
        for up, skip in zip(self.decoder, skips):
            y = up(y, per_source(skip), context)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)
        logits = self.out(y) * self.score_scale + self.score_bias
        logits = logits[..., :T].reshape(B, N, x.shape[-2], T)
        classes = None
        if self.class_head is not None:  # a cosine classifier (unit input × CLASS_LOGIT_SCALE)
            pooled = F.normalize(fv.amax(dim=(-2, -1)), dim=1) * CLASS_LOGIT_SCALE
            classes = self.class_head(pooled).reshape(B, N, -1)
        return SeparationOutput(
            mask=self.mask_head(logits), logits=logits,
            visual_embedding=fv.reshape(B, N, *fv.shape[1:]),
            audio_embedding=audio_emb.reshape(B, N, -1),
            localization=loc.reshape(B, N, *loc.shape[1:]), class_logits=classes)
