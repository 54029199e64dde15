"""Separators by name: construction from configs, shapes for any T, masks, frozen visual trunk."""

import pytest
import torch

from ial.config import ConfigError, from_dict, load_config
from ial.models import MODELS, ModelConfig, build_model, count_parameters

SMALL = dict(visual_channels=8, audio_channels=[4, 8, 8, 16], embed_dim=8, common_hidden=8,
             sop_ngf=4, sop_k=4)


def test_registry_and_config_errors():
    assert {"ial_cms", "sop"} <= set(MODELS.names())
    with pytest.raises(ConfigError, match="name"):
        from_dict(ModelConfig, {"name": "nope"})
    with pytest.raises(ConfigError, match="audio_channels"):
        from_dict(ModelConfig, {"audio_channels": [8, 16]})


@pytest.mark.parametrize("path", ["configs/model/ial_cms.yaml", "configs/model/sop.yaml",
                                  "configs/model/demo.yaml", "configs/model/sop_demo.yaml"])
def test_shipped_configs_load(path):
    cfg = load_config(ModelConfig, path)
    assert cfg.name in MODELS


@pytest.mark.parametrize("name", ["ial_cms", "sop"])
@pytest.mark.parametrize("T", [32, 37])
def test_forward_shapes_any_T(name, T):
    model = build_model(ModelConfig(name=name, **SMALL))
    B, N = 2, 3
    out = model(torch.rand(B, 256, T) + 1e-3, torch.rand(B, N, 2, 8, 5, 5))
    assert out.mask.shape == (B, N, 256, T)
    mask = out.mask.detach()
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1
    assert out.logits.shape == (B, N, 256, T)
    if name == "ial_cms":
        assert out.visual_embedding.shape == (B, N, 8, 5, 5)
        assert out.audio_embedding.shape == (B, N, 8)
        assert torch.allclose(out.audio_embedding.norm(dim=-1), torch.ones(B, N), atol=1e-5)
        assert out.localization.shape == (B, N, 5, 5)


def test_masks_depend_on_the_visual_query():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="ial_cms", **SMALL)).eval()
    mag = torch.rand(1, 256, 32)
    v = torch.rand(1, 2, 1, 8, 4, 4)
    out = model(mag, v)
    assert not torch.allclose(out.mask[0, 0], out.mask[0, 1])
    same = model(mag, v[:, :1].expand(1, 2, -1, -1, -1, -1))
    assert torch.allclose(same.mask[0, 0], same.mask[0, 1])


def test_default_size_matches_documentation():
    # docs/model.md quotes these counts
    assert count_parameters(build_model(ModelConfig())) == 25_439_687
    assert count_parameters(build_model(ModelConfig(name="sop"))) == 42_033_891


@pytest.mark.parametrize("trainable", [False, True])
def test_frames_mode_trunk_gradients(trainable):
    cfg = ModelConfig(name="ial_cms", visual_input="frames", visual_channels=512,
                      train_visual_trunk=trainable, audio_channels=[4, 8, 8, 16], embed_dim=8,
                      common_hidden=8)
    model = build_model(cfg).train()
    frames = torch.randn(2, 2, 1, 3, 32, 32)
    out = model(torch.rand(2, 256, 16), frames)
    assert out.visual_embedding.shape == (2, 2, 8, 2, 2)  # stride 16
    out.mask.mean().backward()
    trunk = list(model.visual.trunk.parameters())
    if trainable:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trunk)
    else:
        assert all(p.grad is None and not p.requires_grad for p in trunk)
        assert not model.visual.trunk.training  # frozen BatchNorm statistics
    head = model.visual_head[0].weight
    assert head.grad is not None and head.grad.abs().sum() > 0
