"""The project's ResNet-18 trunk: shapes, output stride, seeded init, torchvision key names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ial.models.resnet18 import (RANDOM_INIT, ResNet18Trunk, build_trunk, imagenet_normalize,
                                 load_torchvision_weights)

# A few of torchvision's resnet18 state_dict keys, spelled out (torchvision itself cannot be
# imported beside the CPU torch here).
TORCHVISION_KEYS = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                    "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.running_var",
                    "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
                    "layer3.1.conv2.weight", "layer4.0.downsample.0.weight", "layer4.1.bn2.bias"]


@pytest.mark.parametrize("dilate,stride", [(True, 16), (False, 32)])
def test_output_stride(dilate, stride):
    model, desc = build_trunk(None, dilate_layer4=dilate, seed=0)
    assert desc == RANDOM_INIT
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 512, 64 // stride, 96 // stride)


def test_state_dict_keys_match_torchvision():
    keys = set(ResNet18Trunk().state_dict())
    assert set(TORCHVISION_KEYS) <= keys
    # torchvision resnet18: 20 convs + 20 BNs x 4 tensors = 100 (+ fc.weight, fc.bias)
    assert len([k for k in keys if not k.endswith("num_batches_tracked")]) == 100
    # dilation does not change parameter shapes: both variants take the same weights file
    shapes = {k: v.shape for k, v in ResNet18Trunk(True).state_dict().items()}
    assert shapes == {k: v.shape for k, v in ResNet18Trunk(False).state_dict().items()}


def test_seeded_random_init_is_deterministic():
    a, _ = build_trunk(None, seed=3)
    b, _ = build_trunk(None, seed=3)
    c, _ = build_trunk(None, seed=4)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert not any(p.requires_grad for p in a.parameters()) and not a.training


def test_load_torchvision_weights_file(tmp_path):
    src, _ = build_trunk(None, seed=7)
    state = dict(src.state_dict())
    state["fc.weight"] = torch.zeros(1000, 512)  # torchvision's classifier: ignored
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet18-test.pth"
    torch.save(state, path)
    model = ResNet18Trunk()
    desc = load_torchvision_weights(model, str(path))
    assert desc.startswith("resnet18-test.pth sha256:")
    assert torch.equal(model.layer4[1].conv2.weight,
                       src.layer4[1].conv2.weight)
    loaded, desc2 = build_trunk(str(path))
    assert desc2 == desc and torch.equal(loaded.bn1.running_var, src.bn1.running_var)


def test_load_errors_name_file_and_keys(tmp_path):
    state = dict(ResNet18Trunk().state_dict())
    del state["layer3.0.conv1.weight"]
    state["head.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"bad\.pth.*layer3\.0\.conv1\.weight.*head\.weight"):
        load_torchvision_weights(ResNet18Trunk(), str(path))
    state = dict(ResNet18Trunk().state_dict())
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match="conv1.weight has shape"):
        load_torchvision_weights(ResNet18Trunk(), str(path))
    path.write_bytes(b"<html>404 Not Found</html>")  # a failed download saved as the weights
    with pytest.raises(ValueError) as exc:
        load_torchvision_weights(ResNet18Trunk(), str(path))
    assert str(exc.value).startswith(f"config field 'visual_weights': {path}: not a "
                                     "torchvision resnet18 weights file (torch.load cannot read "
                                     "it: ")
    assert "\n" not in str(exc.value)  # one line, not torch's paragraphs of advice


def test_imagenet_normalize():
    frames = np.full((2, 8, 8, 3), 255, dtype=np.uint8)
    x = imagenet_normalize(frames)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                       (1 - 0.406) / 0.225]))
    with pytest.raises(ValueError, match="expected frames"):
        imagenet_normalize(np.zeros((8, 8, 3), dtype=np.uint8))


@pytest.mark.parametrize("dilate,size,native", [(True, 224, True), (True, 80, True),
                                                (False, 96, True), (True, 96, False)])
def test_inference_trunk_matches_eager(dilate, size, native, monkeypatch):
    """BN folded + channels-last + Winograd gives the eager trunk's features (fp32 rounding),
    with the C transforms (layer1-4) and with the pure-torch fallback (layer2-4)."""
    from ial.models import winograd
    from ial.models.resnet18 import InferenceTrunk

    if native and not winograd.native_available():
        pytest.skip("no C compiler: the native Winograd transforms cannot be built here")
    if not native:
        monkeypatch.setattr(winograd, "_kernels", lambda: None)
    model, _ = build_trunk(None, dilate_layer4=dilate, seed=5)
    fast = InferenceTrunk(model)
    frames = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    x = imagenet_normalize(frames)
    with torch.inference_mode():
        ref = model(x)
        got = fast(x)
    assert got.shape == ref.shape and got.is_contiguous()
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-4
    # the winograd path is really taken: layer2-4's 3x3 convs but the stride-2 ones, and
    # layer1's four with the C transforms
    expected = (10 if dilate else 9) + (4 if native else 0)
    assert sum(m.winograd for m in fast.modules() if hasattr(m, "winograd")) == expected
