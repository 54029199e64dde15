"""Visual heads: ours (conv on layer 4) and the authors' DeepLabv3+ head (ASPP + layer-2 fusion)."""

from __future__ import annotations

import pytest
import torch

from ial.config import ConfigError, from_dict
from ial.models import ModelConfig, build_model
from ial.models.resnet18 import InferenceTrunk, build_trunk
from ial.models.visual_heads import DeepLabHead, build_visual_head, pack_low_level

AUTHORS = dict(visual_head="deeplab", visual_channels=512, low_level_channels=512,
               low_level_upscale=2, embed_dim=16, aspp_channels=8, low_level_reduced=4)


def test_packing_keeps_both_maps_exactly():
    deep, low = torch.randn(3, 512, 7, 7), torch.randn(3, 128, 14, 14)
    packed = pack_low_level(deep, low)
    assert packed.shape == (3, 1024, 7, 7)
    assert torch.equal(packed[:, :512], deep)
    assert torch.equal(torch.nn.functional.pixel_shuffle(packed[:, 512:], 2), low)


def test_the_authors_head_fuses_layer2_at_stride_8():
    cfg = ModelConfig(**AUTHORS)
    head = build_visual_head(cfg)
    assert isinstance(head, DeepLabHead)
    branches = head.aspp.branches
    assert [b[0].kernel_size for b in branches] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [b[0].dilation for b in branches] == [(1, 1), (3, 3), (6, 6), (9, 9)]
    x = pack_low_level(torch.randn(2, 512, 7, 7), torch.randn(2, 128, 14, 14))
    out = head(x)
    assert out.shape == (2, 16, 14, 14)  # the layer-2 resolution (28×28 at 224 px)
    out.sum().backward()
    assert head.reduce[0].weight.grad.abs().sum() > 0  # layer 2 takes part


def test_ial_cms_with_the_authors_head_end_to_end():
    model = build_model(ModelConfig(name="ial_cms", audio_channels=[4, 8, 8, 16],
                                    common_hidden=8, **AUTHORS))
    visual = pack_low_level(torch.randn(2 * 2 * 3, 512, 4, 4), torch.randn(12, 128, 8, 8))
    out = model(torch.rand(2, 256, 32) + 1e-3, visual.reshape(2, 2, 3, 1024, 4, 4))
    assert out.mask.shape == (2, 2, 256, 32)
    assert out.visual_embedding.shape == (2, 2, 16, 8, 8) and out.localization.shape == (2, 2, 8, 8)
    groups = model.param_groups()
    head_params = {id(p) for p in model.visual_head.parameters()}
    assert head_params <= {id(p) for p in groups["visual"]}
    assert not head_params & {id(p) for p in groups["audio"]}


def test_the_deeplab_head_refuses_features_without_layer2():
    with pytest.raises(ConfigError, match="low_level_channels"):
        from_dict(ModelConfig, {"visual_head": "deeplab"})


@pytest.mark.parametrize("optimized", [False, True])
def test_the_trunk_gives_layer2_beside_layer4(optimized):
    trunk, _ = build_trunk(None, dilate_layer4=True, seed=0)
    net = InferenceTrunk(trunk) if optimized else trunk.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        deep, low = net(x, low_level=True)
        alone = net(x)
        ref_low = trunk.layer2(trunk.layer1(trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))))
    assert deep.shape == (2, 512, 4, 4) and low.shape == (2, 128, 8, 8)
    assert torch.allclose(deep, alone, atol=1e-5)
    assert torch.allclose(low, ref_low, atol=1e-4)


@pytest.mark.parametrize("name", ["ial_cms", "sop"])
def test_models_without_the_deeplab_head_read_layer4_of_packed_shards(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, audio_channels=[4, 8, 8, 16], common_hidden=8,
                                    embed_dim=16, sop_ngf=4, sop_levels=3, sop_k=4)).eval()
    deep = torch.randn(12, 512, 4, 4)
    packed = pack_low_level(deep, torch.randn(12, 128, 8, 8)).reshape(2, 2, 3, 1024, 4, 4)
    mix = torch.rand(2, 256, 32) + 1e-3
    with torch.no_grad():
        layer4 = model(mix, deep.reshape(2, 2, 3, 512, 4, 4)).mask
        assert torch.equal(model(mix, packed).mask, layer4)
        with pytest.raises(ValueError, match="reads 512 visual .*, the features have 256"):
            model(mix, deep[:, :256].reshape(2, 2, 3, 256, 4, 4))
