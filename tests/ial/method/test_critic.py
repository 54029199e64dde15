"""Independency critic, memory bank, hinge losses — and the adversary doing its job on a toy."""

import pytest
import torch
from torch import nn

from ial.method.critic import (IndependencyCritic, MemoryBank, critic_hinge_loss,
                               separator_adversarial_loss)


def toy_sources(B: int, g: torch.Generator, F: int = 16, T: int = 16) -> torch.Tensor:
    """Independent magnitude 'sources': random pattern × random level. Shape (B, 2, F, T)."""
    level = torch.exp(torch.randn(B, 2, 1, 1, generator=g) * 1.5)
    return level * torch.rand(B, 2, F, T, generator=g)


class LeakySeparator(nn.Module):
    """Toy separator that leaks each source into the other component by a learnable fraction.

    c1 = (1−a)s1 + b s2, c2 = a s1 + (1−b) s2: c1 + c2 = s1 + s2 whatever a, b — a mixture
    consistency loss cannot see the leak, only a dependence measure can.
    """

    def __init__(self, leak: float = 0.3):
        super().__init__()
        self.theta = nn.Parameter(torch.full((2,), float(torch.logit(torch.tensor(leak)))))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        a, b = torch.sigmoid(self.theta)
        return torch.stack([(1 - a) * s[:, 0] + b * s[:, 1], a * s[:, 0] + (1 - b) * s[:, 1]], 1)


def level_correlation(c: torch.Tensor) -> float:
    """Correlation across mixtures of the log-levels of the two separated components."""
    x = torch.log1p(c.detach()).flatten(2).mean(-1)
    x = x - x.mean(0)
    return float((x[:, 0] * x[:, 1]).mean() / (x[:, 0].std() * x[:, 1].std() + 1e-8))


def train(lam: float, steps: int = 200, seed: int = 0, critic_lr: float = 1e-3):
    """Critic every step, separator adversarial term every 3rd step (the method's schedule)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    sep = LeakySeparator()
    critic = IndependencyCritic((16, 16), ndf=8, bank_size=256)
    opt_s = torch.optim.Adam(sep.parameters(), lr=0.05)
    opt_c = torch.optim.Adam(critic.parameters(), lr=critic_lr, betas=(0.0, 0.9))
    for step in range(steps):
        c = sep(toy_sources(32, g))
        if lam > 0 and step % 3 == 0:
            for p in critic.parameters():
                p.requires_grad_(False)
            dep, ind = critic.make_pairs(critic.prepare(c))
            loss = lam * separator_adversarial_loss(critic(dep), critic(ind))
            opt_s.zero_grad()
            loss.backward()
            opt_s.step()
            for p in critic.parameters():
                p.requires_grad_(True)
        x = critic.prepare(c.detach())
        dep, ind = critic.make_pairs(x)
        c_loss = critic_hinge_loss(critic, critic(dep), critic(ind))
        opt_c.zero_grad()
        c_loss.backward()
        opt_c.step()
        critic.bank.push(x.flatten(0, 1))
    return sep, critic, g


def test_bank_is_a_ring_and_survives_state_dict_round_trip():
    bank = MemoryBank(5, 2, 3)
    bank.push(torch.arange(3).float().view(3, 1, 1).expand(3, 2, 3))
    assert len(bank) == 3 and int(bank.ptr) == 3
    bank.push(torch.arange(3, 7).float().view(4, 1, 1).expand(4, 2, 3))
    assert len(bank) == 5 and int(bank.ptr) == 2
    # slots 0,1 were overwritten by items 5, 6; slots 2..4 hold 2, 3, 4
    assert bank.data[:, 0, 0].tolist() == [5, 6, 2, 3, 4]
    fresh = MemoryBank(5, 2, 3)
    fresh.load_state_dict(bank.state_dict())
    assert torch.equal(fresh.data, bank.data) and int(fresh.ptr) == 2 and len(fresh) == 5
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(fresh.sample(4, g1), bank.sample(4, g2))


def test_bank_is_in_the_critic_checkpoint():
    critic = IndependencyCritic((16, 16), ndf=8, bank_size=10)
    critic.bank.push(torch.rand(4, 16, 16))
    state = critic.state_dict()
    assert {"bank.data", "bank.ptr", "bank.count"} <= set(state)
    other = IndependencyCritic((16, 16), ndf=8, bank_size=10)
    other.load_state_dict(state)
    assert torch.equal(other.bank.data, critic.bank.data) and len(other.bank) == 4


def test_pairs_dependent_within_mixture_independent_across():
    critic = IndependencyCritic((8, 8), ndf=4, bank_size=16)
    # each mixture's components carry the mixture index as value
    x = torch.arange(3).float().view(3, 1, 1, 1).expand(3, 2, 8, 8).clone()
    x[:, 1] += 0.5  # tell the two components apart
    dep, ind = critic.make_pairs(x)
    assert dep.shape == (6, 2, 8, 8) and ind.shape == (6, 2, 8, 8)
    # dependent: same mixture (same integer part), different component
    assert torch.equal(dep[:, 0].floor(), dep[:, 1].floor())
    assert not torch.equal(dep[:, 0], dep[:, 1])
    # empty bank: independent partner comes from another mixture
    assert (ind[:, 0].floor() != ind[:, 1].floor()).all()
    critic.bank.push(torch.full((4, 8, 8), 7.0))
    _, ind = critic.make_pairs(x)
    assert (ind[:, 1] == 7.0).all()


def test_hinge_losses():
    critic = IndependencyCritic((8, 8), ndf=4, bank_size=4)
    w2 = float(critic.w.weight.detach().pow(2).sum())
    perfect = critic_hinge_loss(critic, torch.full((5,), -2.0), torch.full((5,), 2.0))
    assert abs(float(perfect.detach()) - w2) < 1e-6  # margins met: only the ‖w‖² term
    wrong = critic_hinge_loss(critic, torch.full((5,), 2.0), torch.full((5,), -2.0))
    assert abs(float(wrong.detach()) - (w2 + 6.0)) < 1e-5
    assert float(separator_adversarial_loss(torch.tensor([-1.0, -3.0]), torch.tensor([2.0]))) == 4.0


def test_critic_has_spectral_norm():
    critic = IndependencyCritic((16, 16), ndf=4, bank_size=4)
    sn = [m for m in critic.modules() if hasattr(m, "parametrizations")]
    assert len(sn) >= 3  # every conv of g and both linears of h


def held_out_scores(critic: IndependencyCritic, g: torch.Generator):
    with torch.no_grad():
        dep, ind = critic.make_pairs(critic.prepare(LeakySeparator()(toy_sources(256, g))))
        s_dep, s_ind = critic(dep), critic(ind)
    accuracy = 0.5 * (float((s_ind > 0).float().mean()) + float((s_dep < 0).float().mean()))
    return accuracy, float(s_ind.mean() - s_dep.mean())


def test_critic_learns_dependent_from_independent_pairs():
    # the leak makes the two components' levels correlated; bank pairs are not. The Bayes
    # accuracy of this toy is about 0.75 (seeds 0-3 reach 0.69-0.76 after 200-400 steps).
    _, critic0, g0 = train(lam=0.0, steps=1)
    _, critic, g = train(lam=0.0, steps=200)
    acc0, dist0 = held_out_scores(critic0, g0)
    acc, dist = held_out_scores(critic, g)
    assert abs(dist0) < 0.1 and acc0 < 0.6, (acc0, dist0)
    assert acc > 0.67 and dist > 0.35, (acc, dist)


def test_adversarial_term_lowers_dependence_of_separated_components():
    g_eval = torch.Generator().manual_seed(123)
    test_sources = toy_sources(512, g_eval)
    sep0, _, _ = train(lam=0.0)
    sep1, _, _ = train(lam=1.0)
    with torch.no_grad():
        dep0 = level_correlation(sep0(test_sources))
        dep1 = level_correlation(sep1(test_sources))
    assert dep0 > 0.6, dep0  # the leak makes the components strongly dependent
    assert dep1 < dep0 - 0.4, (dep0, dep1)
    # and the adversary did it by shrinking the leak (or swapping, equally independent)
    leak = torch.sigmoid(sep1.theta)
    assert bool(((leak < 0.15) | (leak > 0.85)).all()), leak


def test_labelled_bank_samples_the_asked_class_and_keeps_labels_in_its_state():
    bank = MemoryBank(6, 2, 3, labelled=True)
    bank.push(torch.arange(4).float().view(4, 1, 1).expand(4, 2, 3), torch.tensor([0, 1, 0, 2]))
    g = torch.Generator().manual_seed(0)
    drawn = bank.sample(40, g, torch.tensor([0, 1, 2, 7] * 10))[:, 0, 0].view(10, 4)
    assert set(drawn[:, 0].tolist()) == {0.0, 2.0}  # the two entries of class 0
    assert set(drawn[:, 1].tolist()) == {1.0} and set(drawn[:, 2].tolist()) == {3.0}
    assert len(set(drawn[:, 3].tolist())) > 1  # no entry of class 7: any entry
    assert "labels" in bank.state_dict() and "labels" not in MemoryBank(6, 2, 3).state_dict()
    fresh = MemoryBank(6, 2, 3, labelled=True)
    fresh.load_state_dict(bank.state_dict())
    assert fresh.labels[:4].tolist() == [0, 1, 0, 2]
    with pytest.raises(ValueError, match="labelled bank"):
        bank.push(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="labelled bank"):
        MemoryBank(6, 2, 3).push(torch.zeros(1, 2, 3), torch.zeros(1))


def test_label_matched_pairs_give_the_bank_partner_the_dependent_partners_class():
    critic = IndependencyCritic((8, 8), ndf=4, bank_size=16, pairs="label_matched")
    # bank entries carry their class id as value
    critic.bank.push(torch.arange(4).float().view(4, 1, 1).expand(4, 8, 8).repeat(2, 1, 1),
                     torch.arange(4).repeat(2))
    labels = torch.tensor([[0, 1], [2, 3], [1, 2]])
    x = (10 + labels).float().view(3, 2, 1, 1).expand(3, 2, 8, 8)  # component: 10 + its class
    dep, ind = critic.make_pairs(x, labels=labels)
    assert torch.equal(ind[:, 0], dep[:, 0])
    assert torch.equal(ind[:, 1], dep[:, 1] - 10)  # same class as the dependent partner
    with pytest.raises(ValueError, match="labels"):
        critic.make_pairs(x)
