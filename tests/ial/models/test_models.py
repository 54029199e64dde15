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


def test_the_authors_irm_mask_head_is_relu_of_the_score_plus_a_half_and_unbounded():
    torch.manual_seed(0)
    sigmoid = build_model(ModelConfig(name="ial_cms", **SMALL)).eval()
    torch.manual_seed(0)
    relu = build_model(ModelConfig(name="ial_cms", mask_activation="relu", **SMALL)).eval()
    mag, v = torch.rand(1, 256, 32) + 1e-3, torch.rand(1, 2, 1, 8, 4, 4)
    with torch.no_grad():
        a, b = sigmoid(mag, v), relu(mag, v)
        assert torch.equal(a.logits, b.logits)  # the same score map, another head
        assert torch.equal(a.mask, torch.sigmoid(a.logits))
        assert torch.equal(b.mask, torch.relu(b.logits + 0.5))
        relu.score_bias.fill_(2.0)  # a score past 0.5 keeps more than the mixture
        assert float(relu(mag, v).mask.max()) > 1
    with pytest.raises(ConfigError, match="mask_activation"):
        from_dict(ModelConfig, {"name": "sop", "mask_activation": "relu"})


def test_default_size_matches_documentation():
    # docs/model.md quotes these counts
    assert count_parameters(build_model(ModelConfig())) == 25_439_687
    assert count_parameters(build_model(ModelConfig(name="sop"))) == 30_421_731


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


def test_sop_upsamples_bilinearly_then_3x3_conv_as_sound_of_pixels():
    model = build_model(ModelConfig(name="sop", **SMALL))
    kinds = {type(m).__name__ for m in model.unet.modules()}
    assert "ConvTranspose2d" not in kinds and "Upsample" in kinds
    ups = [m for m in model.unet.modules() if isinstance(m, torch.nn.Upsample)]
    assert all(u.mode == "bilinear" and u.scale_factor == 2 for u in ups)


def test_sop_frame_net_runs_per_frame_then_max_pools_over_frames_and_space():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="sop", **SMALL)).eval()
    frames = torch.rand(1, 1, 3, 8, 5, 5)  # three frames whose maps differ
    mag = torch.rand(1, 256, 128) + 1e-3  # T a multiple of 2**levels: no padding inside
    got = model(mag, frames).logits
    # SoP: fc on each frame, then the max over (frames, H, W)
    per_frame = model.frame_fc(frames[0, 0]).amax(dim=(0, 2, 3))
    img = torch.sigmoid(per_frame)
    audio = model.unet(model.input_norm(model.log_input(mag)))
    expected = torch.einsum("k,kft->ft", img * model.scale, audio[0]) + model.bias
    assert torch.allclose(got[0, 0], expected, atol=1e-5)
    # pooling the frames first (the old order) gives another answer
    pooled_first = torch.sigmoid(model.frame_fc(frames[0, 0].amax(0, keepdim=True)).amax(
        dim=(0, 2, 3)))
    assert not torch.allclose(pooled_first, img)


def test_sop_trains_its_frame_trunk_in_frames_mode():
    cfg = ModelConfig(name="sop", visual_input="frames", visual_channels=512,
                      train_visual_trunk=True, sop_ngf=4, sop_k=4)
    model = build_model(cfg).train()
    out = model(torch.rand(1, 256, 128), torch.randn(1, 2, 2, 3, 32, 32))
    out.logits.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.visual.trunk.parameters())
    assert {id(p) for p in model.param_groups()["frame_trunk"]} == {
        id(p) for p in model.visual.trunk.parameters()}
