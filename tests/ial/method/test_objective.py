"""IALMethod: losses, gradient routing between separator and critic, schedules, resume, overfit."""

import math

import pytest
import torch

from ial import signal
from ial.config import ConfigError, from_dict, load_config
from ial.method.config import MethodConfig, lambda_av_at, lambda_ind_at
from ial.method.mixing import ClipBatch
from ial.method.objective import IALMethod
from ial.models import ModelConfig

SMALL = dict(visual_channels=8, audio_channels=[8, 16, 16, 32], embed_dim=16, common_hidden=16,
             sop_ngf=8, sop_k=8)
CRITIC = dict(bank_size=32, critic_ndf=8, critic_input_size=[16, 16])


def tone_clips(n: int = 4, L: int = 8000, seed: int = 0) -> ClipBatch:
    """n solo 'instruments' (harmonic tones, distinct pitch), distinct visual features, labels
    0..n-1."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(L) / signal.SAMPLE_RATE
    f0 = [200.0, 330.0, 520.0, 800.0, 1250.0, 1900.0][:n]
    audio = torch.stack([
        0.3 * sum(torch.sin(2 * math.pi * f * k * t + float(torch.rand(1, generator=g)) * 6) / k
                  for k in (1, 2, 3))
        for f in f0])
    return ClipBatch(audio, torch.rand(n, 1, 8, 3, 4, generator=g), torch.arange(n),
                     [f"c{i}" for i in range(n)])


def method(name="ial_cms", **kw) -> IALMethod:
    torch.manual_seed(0)
    cfg = dict(lambda_ind=0.01, lambda_ind_schedule="constant", drop_hardest=0, **CRITIC)
    cfg.update(kw)
    return IALMethod(ModelConfig(name=name, **SMALL), MethodConfig(**cfg))


def grads(module):
    return [p.grad for p in module.parameters()]


def test_gradients_reach_exactly_the_right_parameters():
    m = method()
    mix = m.mixtures(tone_clips(), torch.Generator().manual_seed(0))
    assert m.adversary_due(0)
    with m.critic_frozen():
        loss, logs, comps = m.separator_loss(mix, step=0)
        loss.backward()
    assert "loss_ind" in logs and "loss_av" in logs
    assert all(g is None for g in grads(m.critic))  # the separator's loss does not train the critic
    assert all(p.requires_grad for p in m.critic.parameters())  # restored after the context
    sep_grads = [g.clone() for g in grads(m.separator)]
    assert all(g is not None for g in sep_grads)
    assert not comps.requires_grad and comps.shape == (2, 2, 256, 32)

    # the adversarial term itself reaches the separator: same step without it → other gradients
    m0 = method(lambda_ind=0.0)
    with m0.critic_frozen():
        m0.separator_loss(mix, step=0)[0].backward()
    assert any(not torch.allclose(a, b.grad) for a, b in zip(sep_grads, m0.separator.parameters()))

    # the critic's loss trains the critic only, and fills the bank
    m.separator.zero_grad(set_to_none=True)
    c_loss, c_logs = m.critic_loss(comps, step=0)
    c_loss.backward()
    assert all(g is None for g in grads(m.separator))
    assert all(g is not None for g in grads(m.critic))
    assert len(m.bank) == 4 and c_logs["bank_fill"] == 4

    # without critic_frozen the separator's backward WOULD leak into the critic
    m.critic.zero_grad(set_to_none=True)
    m.separator_loss(mix, step=0)[0].backward()
    assert any(g is not None for g in grads(m.critic))


def test_lambda_schedules_follow_the_authors_step_by_step():
    cfg = MethodConfig()  # the defaults are the authors' README schedules
    # λ_ind counts batches: 0.01/1000 until batch 8000 included, ×10 after 8000, 16000, 24000
    batches = (0, 7999, 8000, 8001, 16000, 16001, 24000, 24001, 10**6)
    ind = {b: lambda_ind_at(cfg, b) for b in batches}
    assert ind == pytest.approx({0: 1e-5, 7999: 1e-5, 8000: 1e-5, 8001: 1e-4, 16000: 1e-4,
                                 16001: 1e-3, 24000: 1e-3, 24001: 1e-2, 10**6: 1e-2})
    # λ_av counts separator updates (one every 3rd batch): update u happens at batch 3u
    av = {b: lambda_av_at(cfg, b) for b in (0, 12000, 12003, 24003, 36003)}
    assert av == pytest.approx({0: 5e-5, 12000: 5e-5, 12003: 5e-4, 24003: 5e-3, 36003: 5e-2})
    linear = MethodConfig(lambda_ind_schedule="linear", lambda_ind_steps=[10, 20])
    assert [lambda_ind_at(linear, b) for b in (5, 15, 99)] == pytest.approx([0.0, 0.005, 0.01])
    flat = MethodConfig(lambda_av_schedule="constant")
    assert lambda_av_at(flat, 0) == lambda_av_at(flat, 10**6) == 0.05
    assert lambda_ind_at(MethodConfig(lambda_ind=0.0), 10**6) == 0.0


def test_step10_fade_warms_up_as_step10_then_fades_linearly_to_zero():
    cfg = MethodConfig(lambda_ind=0.1, lambda_ind_schedule="step10_fade",
                       lambda_ind_steps=[150, 300, 500, 1500, 3000])
    got = {b: lambda_ind_at(cfg, b) for b in (0, 150, 151, 301, 501, 1500, 2250, 3000, 4000)}
    assert got == pytest.approx({0: 1e-4, 150: 1e-4, 151: 1e-3, 301: 1e-2, 501: 0.1, 1500: 0.1,
                                 2250: 0.05, 3000: 0.0, 4000: 0.0})
    with pytest.raises(ConfigError, match="lambda_ind_steps"):
        from_dict(MethodConfig, {"lambda_ind_schedule": "step10_fade",
                                 "lambda_ind_steps": [150, 300, 500, 1500, 1500]})


def test_update_intervals_critic_every_batch_separator_every_third():
    m = method()
    assert [m.separator_due(s) for s in range(7)] == [True, False, False, True, False, False, True]
    assert all(m.critic_due(s) for s in range(7))
    assert [m.adversary_due(s) for s in range(4)] == [True, False, False, True]
    ablation = method(lambda_ind=0.0)
    assert not ablation.uses_critic and not ablation.critic_due(0) and not ablation.adversary_due(0)
    assert ablation.separator_due(3) and not ablation.separator_due(4)
    mix = ablation.mixtures(tone_clips(), torch.Generator().manual_seed(0))
    assert "loss_ind" not in ablation.separator_loss(mix, 0)[1]


class _Engine:
    """What ``train_step`` needs of a DeepSpeed engine, over a plain module and optimizer."""

    def __init__(self, module):
        self.module = module
        self.opt = torch.optim.SGD(module.parameters(), lr=0.1)

    def __call__(self, *args):
        return self.module(*args)

    def train(self):
        self.module.train()

    def backward(self, loss):
        loss.backward()

    def step(self):
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def test_train_step_updates_the_separator_every_third_batch_and_the_critic_every_batch():
    from ial.training.engines import train_step

    m = method()
    sep, critic = _Engine(m.separator), _Engine(m.critic)
    clips = tone_clips()
    changed = []
    for step in range(6):
        before_sep = [p.detach().clone() for p in m.separator.parameters()]
        before_critic = [p.detach().clone() for p in m.critic.parameters()]
        logs = train_step(m, sep, critic, m.mixtures(clips, torch.Generator().manual_seed(step)),
                          step)
        changed.append((any(not torch.equal(a, b) for a, b in zip(before_sep,
                                                                 m.separator.parameters())),
                        any(not torch.equal(a, b) for a, b in zip(before_critic,
                                                                 m.critic.parameters())),
                        "loss" in logs, logs["separator_update"]))
        assert len(m.bank) == 4 * (step + 1)  # the critic saw this batch's components
    assert changed == [(True, True, True, 1.0), (False, True, False, 0.0),
                       (False, True, False, 0.0), (True, True, True, 1.0),
                       (False, True, False, 0.0), (False, True, False, 0.0)]


def test_critic_updates_train_the_critic_several_times_per_batch_and_bank_it_once():
    from ial.training.engines import train_step

    clips = tone_clips()
    runs = {}
    for updates in (1, 3):
        m = method(critic_updates=updates, separator_every=1)
        sep, critic = _Engine(m.separator), _Engine(m.critic)
        steps = []
        critic.step = lambda engine=critic: (steps.append(1), _Engine.step(engine))
        logs = train_step(m, sep, critic, m.mixtures(clips, torch.Generator().manual_seed(0)), 0)
        runs[updates] = (len(steps), len(m.bank), logs["critic_accuracy"],
                         [p.detach().clone() for p in m.critic.parameters()])
    assert runs[1][:2] == (1, 4) and runs[3][:2] == (3, 4)  # the batch's 4 components, once
    assert runs[1][2] == runs[3][2]  # logged: the scores before the critic trained on the batch
    assert any(not torch.equal(a, b) for a, b in zip(runs[1][3], runs[3][3]))
    # the updates share the batch's critic inputs: handing them over changes nothing
    m, comps = method(), torch.rand(2, 2, 256, 32)
    torch.manual_seed(5)
    plain = m.critic_loss(comps, 0, remember=False)[0]
    torch.manual_seed(5)
    given = m.critic_loss(comps, 0, remember=False, prepared=m.critic.prepare(comps))[0]
    assert torch.allclose(plain, given, rtol=1e-5)  # (CPU convolutions differ by ~1e-6 run to run)
    with pytest.raises(ConfigError, match="critic_updates"):
        from_dict(MethodConfig, {"critic_updates": 0})


def test_weighted_bce_is_refused_for_a_mask_head_that_is_not_a_sigmoid():
    with pytest.raises(ConfigError, match="separation_loss.*relu"):
        IALMethod(ModelConfig(name="ial_cms", mask_activation="relu", **SMALL),
                  MethodConfig(separation_loss="weighted_bce", **CRITIC))


def test_configs_and_validation():
    for name in ("ial", "cms_only", "sop", "authors_supervised", "authors_unsupervised", "demo"):
        cfg = load_config(MethodConfig, f"configs/method/{name}.yaml")
        assert cfg.separator_every >= 1
    sup = load_config(MethodConfig, "configs/method/authors_supervised.yaml")
    unsup = load_config(MethodConfig, "configs/method/authors_unsupervised.yaml")
    assert (sup.mode, sup.lambda_ind, unsup.mode, unsup.lambda_ind) == (
        "supervised", 0.0, "unsupervised", 0.01)
    assert load_config(MethodConfig, "configs/method/ial.yaml") == MethodConfig()  # defaults
    assert load_config(MethodConfig, "configs/method/cms_only.yaml").lambda_ind == 0
    with pytest.raises(ConfigError, match="n_mix"):
        from_dict(MethodConfig, {"n_mix": 5})
    with pytest.raises(ConfigError, match="lambda_ind_steps"):
        from_dict(MethodConfig, {"lambda_ind_schedule": "linear", "lambda_ind_steps": [5]})
    with pytest.raises(ConfigError, match="lambda_av_steps"):
        from_dict(MethodConfig, {"lambda_av_steps": [300, 200]})
    with pytest.raises(ConfigError, match="separator_every"):
        from_dict(MethodConfig, {"separator_every": 0})


def test_the_optional_visual_class_loss_trains_the_class_head_and_the_visual_head():
    torch.manual_seed(0)
    m = IALMethod(ModelConfig(**SMALL, n_classes=4),
                  MethodConfig(lambda_ind=0, lambda_av=0, lambda_cls=1.0, **CRITIC))
    mix = m.mixtures(tone_clips(), torch.Generator().manual_seed(0))
    loss, logs, _ = m.separator_loss(mix, step=0)
    out = m.separate(mix)[0]
    assert out.class_logits.shape == (2, 2, 4)
    expected = torch.nn.functional.cross_entropy(out.class_logits.flatten(0, 1),
                                                 mix.labels.flatten())
    assert logs["loss_cls"] == pytest.approx(float(expected.detach()), rel=1e-5)
    # only through the visual queries: the audio encoder gets none of the class loss
    m.separator.zero_grad(set_to_none=True)
    m.class_loss(out, mix).backward()
    sep = m.separator
    assert all(p.grad is not None for p in sep.class_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in sep.visual_head.parameters())
    assert all(p.grad is None for p in sep.stem.parameters())
    # off by default: no head, no logits, no loss
    m0 = method()
    assert m0.separator.class_head is None and "loss_cls" not in m0.separator_loss(mix, 0)[1]


def test_the_class_loss_of_solo_pair_duets_scores_each_player_by_its_own_clip():
    torch.manual_seed(0)
    cfg = from_dict(MethodConfig, {"lambda_cls": 1.0, "mode": "unsupervised",
                                   "duets": "solo_pairs", "lambda_ind": 0, "lambda_av": 0,
                                   **CRITIC})
    m = IALMethod(ModelConfig(**SMALL, n_classes=4), cfg)
    mix = m.mixtures(tone_clips(), torch.Generator().manual_seed(0))
    assert sorted(mix.query_labels.flatten().tolist()) == [0, 1, 2, 3]  # four players
    _, logs, _ = m.separator_loss(mix, step=0)
    out = m.separate(mix)[0]
    assert out.class_logits.shape == (1, 4, 4)
    expected = torch.nn.functional.cross_entropy(out.class_logits[0], mix.query_labels[0])
    assert logs["loss_cls"] == pytest.approx(float(expected.detach()), rel=1e-5)


def test_the_visual_class_loss_names_what_is_missing():
    with pytest.raises(ConfigError, match="n_classes"):  # no class head to train
        IALMethod(ModelConfig(**SMALL), MethodConfig(lambda_cls=0.5, **CRITIC))
    with pytest.raises(ConfigError, match="model 'sop'"):  # sop has none
        IALMethod(ModelConfig(name="sop", n_classes=4, **SMALL),
                  MethodConfig(lambda_cls=0.5, lambda_ind=0, **CRITIC))
    with pytest.raises(ConfigError, match="lambda_cls"):  # a duet video's players: no label each
        from_dict(MethodConfig, {"lambda_cls": 0.5, "mode": "unsupervised"})
    torch.manual_seed(0)
    m = IALMethod(ModelConfig(**SMALL, n_classes=2), MethodConfig(lambda_cls=1.0, **CRITIC))
    mix = m.mixtures(tone_clips(), torch.Generator().manual_seed(0))  # labels 0..3
    with pytest.raises(ConfigError, match="n_classes.*label id 3"):
        m.separator_loss(mix, step=0)


def test_critic_state_resumes_exactly():
    m = method()
    mix = m.mixtures(tone_clips(), torch.Generator().manual_seed(0))
    _, _, comps = m.separator_loss(mix, 0)
    for step in range(3):
        m.critic_loss(comps * (1 + step), step)
    other = method()
    other.critic.load_state_dict(m.critic.state_dict())
    assert torch.equal(other.bank.data, m.bank.data) and len(other.bank) == len(m.bank) == 12
    torch.manual_seed(7)
    a = m.critic_loss(comps, 3)[0]
    torch.manual_seed(7)
    b = other.critic_loss(comps, 3)[0]
    assert torch.equal(a, b)


def test_engine_callables_are_used():
    m = method()
    calls = {"sep": 0, "critic": 0}

    def sep_engine(*args):
        calls["sep"] += 1
        return m.separator(*args)

    def critic_engine(*args):
        calls["critic"] += 1
        return m.critic(*args)

    mix = m.mixtures(tone_clips(), torch.Generator().manual_seed(0))
    _, _, comps = m.separator_loss(mix, 0, separator=sep_engine, critic=critic_engine)
    m.critic_loss(comps, 0, critic=critic_engine)
    assert calls == {"sep": 1, "critic": 4}


@pytest.mark.parametrize("name,mode,steps,lr", [
    ("ial_cms", "supervised", 40, 3e-3),
    ("ial_cms", "unsupervised", 40, 3e-3),
    ("sop", "supervised", 100, 1e-2),
    ("sop", "unsupervised", 100, 1e-2),
])
def test_overfits_a_tiny_batch(name, mode, steps, lr):
    """Two optimizers as in training; the separation error falls by an order of magnitude:
    weighted BCE ×0.1 for sop, SI-SNR +10 dB (noise energy ×0.1) for ial_cms."""
    m = method(name, mode=mode, lambda_ind=0.01 if name == "ial_cms" else 0.0)
    mix = m.mixtures(tone_clips(), torch.Generator().manual_seed(0))
    assert mix.n_components == (4 if mode == "unsupervised" else 2)
    opt = torch.optim.Adam(m.separator.parameters(), lr=lr)
    critic_opt = torch.optim.Adam(m.critic.parameters(), lr=1e-3, betas=(0.0, 0.9))
    history = []
    for step in range(steps):
        with m.critic_frozen():
            loss, logs, comps = m.separator_loss(mix, step)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if m.critic_due(step):
            c_loss, _ = m.critic_loss(comps, step)
            critic_opt.zero_grad()
            c_loss.backward()
            critic_opt.step()
        history.append(logs)
    if name == "sop":
        assert history[-1]["loss_sep"] < 0.1 * history[0]["loss_sep"], (history[0], history[-1])
    else:
        assert history[-1]["si_snr_db"] > history[0]["si_snr_db"] + 10, (history[0], history[-1])
        assert history[-1]["si_snr_db"] > 15


def test_label_matched_critic_pairs_carry_the_mixtures_labels_into_the_bank():
    with pytest.raises(ConfigError, match="critic_pairs"):  # a duet's components share a label
        from_dict(MethodConfig, {"critic_pairs": "label_matched", "mode": "unsupervised"})
    m = method(critic_pairs="label_matched")
    mix = m.mixtures(tone_clips(), torch.Generator().manual_seed(0))
    labels = m.component_labels(mix)
    assert torch.equal(labels, mix.labels)  # supervised: one component per target
    loss, logs, comps = m.separator_loss(mix, step=0)  # the adversarial term pairs with labels
    assert "loss_ind" in logs and torch.isfinite(loss)
    with pytest.raises(ValueError, match="labels"):
        m.critic_loss(comps, step=0)
    m.critic_loss(comps, step=0, labels=labels)
    assert m.bank.labels[:len(m.bank)].tolist() == labels.flatten().tolist()
    assert "bank.labels" in m.critic.state_dict()
    assert "bank.labels" not in method().critic.state_dict()  # "any" (authors'): as before


def test_duets_from_solo_pairs_train_on_the_duet_and_are_scored_as_solo_pairs():
    with pytest.raises(ConfigError, match="duets"):  # supervised mixes solos already
        from_dict(MethodConfig, {"duets": "solo_pairs"})
    m = method(mode="unsupervised", duets="solo_pairs")
    assert m.cfg.clips_per_mixture == 4 and m.cfg.components_per_mixture == 4
    clips = tone_clips(n=4)
    mix = m.mixtures(clips, torch.Generator().manual_seed(0))
    assert mix.mixture.shape[0] == 1 and mix.n_components == 4 and mix.sources.shape[1] == 2
    loss, logs, comps = m.separator_loss(mix, step=0)  # duet-level SI-SNR + the adversary
    assert comps.shape[1] == 4 and "loss_ind" in logs and torch.isfinite(loss)
    scored = m.scored_mixtures(clips, torch.Generator().manual_seed(0))
    assert scored.mode == "supervised" and scored.mixture.shape[0] == 2
    assert scored.n_components == scored.sources.shape[1] == 2  # one query per solo
    real = method(mode="unsupervised")  # real duet videos: validation scores the duets
    assert real.scored_mixtures(clips, torch.Generator().manual_seed(0)).mode == "unsupervised"
