"""SI-SNR (capped), audio-visual InfoNCE, weighted BCE and SoP binary masks."""

import math

import torch
import torch.nn.functional as F

from ial.method.losses import av_infonce, binary_masks, si_snr, sop_weight, weighted_bce


def test_si_snr_known_noise_level_and_scale_invariance():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(4, 8000, generator=g, dtype=torch.float64)
    noise = torch.randn(4, 8000, generator=g, dtype=torch.float64)
    ref, noise = ref - ref.mean(-1, keepdim=True), noise - noise.mean(-1, keepdim=True)
    noise = noise - (noise * ref).sum(-1, keepdim=True) / ref.pow(2).sum(-1, keepdim=True) * ref
    scale = ref.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
    noise = noise * scale / math.sqrt(10)
    value = si_snr(ref + noise, ref, cap_db=None)
    assert torch.allclose(value, torch.full((4,), 10.0, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(si_snr(3.0 * (ref + noise), ref, cap_db=None), value, atol=1e-6)


def test_si_snr_cap_is_soft_and_bounded():
    ref = torch.randn(2, 4000, dtype=torch.float64)
    assert torch.allclose(si_snr(ref, ref), torch.full((2,), 30.0, dtype=torch.float64), atol=1e-3)
    assert float(si_snr(ref, ref, cap_db=None).min()) > 60
    est = (ref + 1e-4 * torch.randn_like(ref)).requires_grad_()
    si_snr(est, ref).sum().backward()
    assert est.grad.abs().sum() > 0  # a hard clamp would give no gradient here


def test_infonce_prefers_matching_pairs():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(8, 16, generator=g), dim=1)
    maps = F.normalize(torch.randn(8, 16, 3, 3, generator=g), dim=1)
    maps[:, :, 1, 1] = a  # each visual map contains its audio embedding at one location
    matched = av_infonce(maps, a, temperature=0.3, drop_hardest=0)
    shuffled = av_infonce(maps, a.roll(1, 0), temperature=0.3, drop_hardest=0)
    assert float(matched) < float(shuffled) - 1.0


def test_infonce_drops_hardest_false_negative():
    g = torch.Generator().manual_seed(1)
    a = F.normalize(torch.randn(6, 16, generator=g), dim=1)
    a[1] = a[0]  # item 1 is the same class as item 0: a false negative for each other
    maps = a[:, :, None, None].clone()
    keep_all = av_infonce(maps, a, drop_hardest=0)
    dropped = av_infonce(maps, a, drop_hardest=1)
    assert float(dropped) < 0.5 * float(keep_all)
    # value check of one direction with nothing dropped: plain cross-entropy
    sim = (maps.flatten(1) @ a.t()) / 0.3
    targets = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(sim, targets) + F.cross_entropy(sim.t(), targets))
    assert torch.allclose(keep_all, expected, atol=1e-5)


def test_weighted_bce_and_binary_masks():
    mags = torch.tensor([[1.0, 5.0], [3.0, 2.0]]).view(1, 2, 1, 2)  # (B, N, F, T)
    mix = torch.tensor([[[4.0, 7.0]]])  # |mix| of the two bins (B, F, T)
    gt = binary_masks(mags, mix)  # SoP: mag_n > 0.5·|mix|
    assert gt.view(2, 2).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    # phase interference: |mix| below both sources → both own the bin (argmax would give one);
    # a bin where neither reaches half the mixture belongs to nobody
    both = binary_masks(torch.tensor([2.0, 1.5]).view(1, 2, 1, 1), torch.tensor([[[2.5]]]))
    none = binary_masks(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1), torch.tensor([[[3.0]]]))
    assert both.flatten().tolist() == [1.0, 1.0] and none.flatten().tolist() == [0.0, 0.0]
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0]).view(1, 2, 1, 2)
    weight = sop_weight(torch.tensor([[[4.0, 7.0]]])).unsqueeze(1)
    expected = (F.binary_cross_entropy_with_logits(logits, gt, reduction="none") * weight).mean()
    assert torch.allclose(weighted_bce(logits, gt, weight), expected)
    assert abs(float(sop_weight(torch.tensor(0.0))) - 1e-3) < 1e-9
    assert float(sop_weight(torch.tensor(1e9))) == 10.0


def test_infonce_keeps_at_least_two_negatives():
    g = torch.Generator().manual_seed(2)
    a = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    maps = a[:, :, None, None].clone()
    # 4 embeddings: 3 negatives each; asking to drop 6 drops only 1 (2 stay), not all but one
    kept_two = av_infonce(maps, a, drop_hardest=6)
    assert torch.allclose(kept_two, av_infonce(maps, a, drop_hardest=1))
    plain = av_infonce(maps, a, drop_hardest=0)
    assert not torch.allclose(kept_two, plain)  # one was dropped
