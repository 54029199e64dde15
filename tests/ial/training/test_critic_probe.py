"""``ial.training.critic_probe``: which pairs a run's critic tells apart on its validation clips."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ial.data.synthetic import write_synthetic_shards
from ial.storage import Storage
from ial.training.config import TrainConfig
from ial.method.mixing import ClipBatch, make_mixtures
from ial.training.critic_probe import (
    adversary_gradient_share, auc, component_sources, main, pair_scores, probe_critic)
from ial.training.launcher import launch


class ClassReadingCritic(torch.nn.Module):
    """Scores +1 a pair whose inputs carry the same class (their constant value), else −1: the
    shortcut the probe is there to expose."""

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        first, second = pairs[:, 0].mean((1, 2)), pairs[:, 1].mean((1, 2))
        return torch.where(first == second, 1.0, -1.0)


def test_pair_scores_expose_a_critic_that_reads_the_classes():
    labels = torch.tensor([[0, 1], [1, 2], [2, 0], [0, 2], [1, 0], [2, 1]])
    x = labels[:, :, None, None].float().expand(-1, -1, 4, 4)  # each input: its class id
    res = pair_scores(ClassReadingCritic(), x, labels, seed=0)
    assert res["n_mixtures"] == 6 and res["dependent"] == {"mean": -1.0, "n": 12}
    assert res["same"]["auc"] == 1.0 and res["same"]["mean"] == 1.0  # shares the class
    assert res["matched"]["auc"] == 0.5 and res["other"]["auc"] == 0.5  # as a dependent pair
    assert res["same_vs_matched_auc"] == 1.0
    assert res == pair_scores(ClassReadingCritic(), x, labels, seed=0)  # seeded


class DuetReadingCritic(torch.nn.Module):
    """Scores −1 a pair whose inputs carry the same value (the two players of one duet), else
    +1: a critic that tells only one duet's players from the rest."""

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        first, second = pairs[:, 0].mean((1, 2)), pairs[:, 1].mean((1, 2))
        return torch.where(first == second, -1.0, 1.0)


def test_pair_scores_of_duets_report_one_duets_players_apart():
    M, N = 5, 4
    duet = torch.tensor([0, 0, 1, 1])
    x = (torch.arange(M)[:, None] * 2 + duet)[:, :, None, None].float().expand(-1, -1, 3, 3)
    unknown = torch.full((M, N), -1)  # duet videos: the players' classes are not known
    res = pair_scores(DuetReadingCritic(), x, unknown, duet, seed=0)
    assert res["dependent"]["n"] == M * N * (N - 1)  # every ordered pair of one mixture
    assert set(res) == {"n_mixtures", "dependent", "any", "dependent_one_duet",
                        "dependent_two_duets"}  # no class kinds without classes
    assert res["any"] == {"mean": 1.0, "n": 4 * M * N, "auc": pytest.approx(2 / 3)}
    assert res["dependent_one_duet"] == {"mean": -1.0, "n": 4 * M, "auc": 1.0}
    assert res["dependent_two_duets"] == {"mean": 1.0, "n": 8 * M, "auc": 0.5}
    classes = (torch.arange(M)[:, None] + torch.arange(N)) % 6  # each mixture four of six
    known = pair_scores(DuetReadingCritic(), x, classes, duet)
    assert {"matched", "same", "other"} <= set(known) and "any" not in known


def test_component_sources_are_each_players_own_clip_at_its_duets_gain():
    g = torch.Generator().manual_seed(0)
    clips = ClipBatch(audio=torch.randn(8, 300, generator=g), visual=torch.rand(8, 2, 3, 2, 4),
                      label=torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]),
                      clip_id=[f"vid{i}_{1000 * i}" for i in range(8)])
    mix = make_mixtures(clips, 2, "unsupervised", g, gain_db=6.0, solo_duets=True)
    players = component_sources(mix, clips)
    assert players.shape == (mix.mixture.shape[0], 4, 300)
    duets = torch.zeros_like(mix.sources).index_add(1, mix.component_source, players)
    assert torch.allclose(duets, mix.sources)  # the players sum to each duet's target
    solos = make_mixtures(clips, 2, "supervised", g)
    assert component_sources(solos, clips) is solos.sources


def test_auc_counts_ties_half():
    assert auc(np.array([1.0, 2.0]), np.array([0.0])) == 1.0
    assert auc(np.array([1.0]), np.array([1.0, 2.0])) == 0.25


def train_tiny_run(root: str, name: str, rows: int, batch_size: int, steps: int,
                   **method) -> str:
    """A tiny trained run with a critic on synthetic shards (a quarter of the clips val)."""
    write_synthetic_shards(root, "toy", shards=2, rows=rows, samples=6000,
                           splits=("train", "val", "train", "train"))
    cfg = TrainConfig(root=root, dataset="toy", run_name=name, batch_size=batch_size,
                      steps=steps, segment_samples=4095, val_every=steps, val_mixtures=2,
                      checkpoint_every=3, num_workers=0, seed=1,
                      model={"visual_channels": 8, "embed_dim": 8, "audio_channels": [4, 4, 4, 4],
                             "common_hidden": 8},
                      method={"bank_size": 16, "critic_ndf": 4, "critic_input_size": [16, 16],
                              "lambda_ind_steps": [0, 2], "drop_hardest": 0, **method})
    launch(cfg, in_process=True, progress=False)
    return Storage(root).url("checkpoints", name)


@pytest.mark.slow
def test_probe_of_a_trained_run_and_its_errors(tmp_path, capsys):
    run = train_tiny_run(str(tmp_path), "tiny", rows=16, batch_size=4, steps=6)
    res = probe_critic(run, rounds=2, batch_size=4)
    assert res["dependent"]["n"] == 2 * res["n_mixtures"] > 0
    for kind in ("matched", "same", "other"):
        assert res[kind]["n"] == 4 * 2 * res["n_mixtures"] and 0 <= res[kind]["auc"] <= 1
    assert probe_critic(run, rounds=2, batch_size=4) == res  # seeded
    oracle = probe_critic(run, components="oracle", rounds=2, batch_size=4)
    assert oracle["dependent"]["mean"] != res["dependent"]["mean"]
    irm = probe_critic(run, components="irm", rounds=2, batch_size=4)
    assert irm["dependent"]["mean"] not in (res["dependent"]["mean"], oracle["dependent"]["mean"])

    share = adversary_gradient_share(run, batches=2, batch_size=4)
    assert (share["step"], share["batches"], share["batch_size"]) == (6, 2, 4)
    assert share["lambda_ind"] == 0.01 and 0 < share["share"]["min"] <= share["share"]["max"]
    assert -1 <= share["cosine"] <= 1
    stronger = tmp_path / "stronger"  # the same run, as if λ_ind were ten times larger
    shutil.copytree(run, stronger)
    config = stronger / "config.yaml"
    assert "  lambda_ind_steps:" in config.read_text()  # method: holds the run's overrides only
    config.write_text(config.read_text().replace("  lambda_ind_steps:",
                                                 "  lambda_ind: 0.1\n  lambda_ind_steps:"))
    ten = adversary_gradient_share(str(stronger), batches=2, batch_size=4)
    assert ten["share"]["mean"] == pytest.approx(10 * share["share"]["mean"], rel=1e-4)
    assert ten["cosine"] == pytest.approx(share["cosine"], abs=1e-3)  # the same directions
    main([run, "--gradients", "1", "--batch-size", "4"])
    assert "adversary of" in capsys.readouterr().out

    for argv, message in (([str(tmp_path / "nothing")], "not a training run"),
                          ([run, "--gradients", "1", "--separator", run], "does not go with"),
                          ([run, "--rounds", "0"], "--rounds 0"),
                          ([run, "--batch-size", "0"], "--batch-size 0"),
                          ([run, "--batch-size", "64"], "smaller --batch-size")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert str(exc.value).startswith("Error: ") and message in str(exc.value)
    moved = tmp_path / "moved"  # the run's data moved since it trained: the error says where
    shutil.copytree(run, moved)
    config = moved / "config.yaml"
    config.write_text(f"root: {tmp_path / 'gone'}\n" + "\n".join(
        line for line in config.read_text().splitlines() if not line.startswith("root:")))
    with pytest.raises(SystemExit) as exc:
        main([str(moved)])
    assert str(exc.value).startswith("Error: ") and str(tmp_path / "gone") in str(exc.value)
    assert "no shards of dataset" in str(exc.value) and "--root" in str(exc.value)
    res_moved = probe_critic(str(moved), rounds=2, batch_size=4, root=str(tmp_path))
    assert res_moved == res  # --root: the same clips read where they are now
    main([str(moved), "--gradients", "1", "--batch-size", "4", "--root", str(tmp_path)])
    assert "adversary of" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main([str(moved), "--root", str(tmp_path / "elsewhere")])
    assert str(tmp_path / "elsewhere") in str(exc.value) and "--root" in str(exc.value)


@pytest.mark.slow
def test_probe_of_an_unsupervised_run_of_solo_pair_duets(tmp_path, capsys):
    run = train_tiny_run(str(tmp_path), "duets", rows=24, batch_size=8, steps=3,
                         mode="unsupervised", duets="solo_pairs")
    res = probe_critic(run, rounds=2, batch_size=8)
    M = res["n_mixtures"]
    assert M > 0 and res["dependent"]["n"] == 12 * M  # four players, every ordered pair
    assert res["dependent_one_duet"]["n"] == 4 * M and res["dependent_two_duets"]["n"] == 8 * M
    oracle = probe_critic(run, components="oracle", rounds=2, batch_size=8)
    assert oracle["dependent"]["mean"] != res["dependent"]["mean"]
    main([run, "--rounds", "2", "--batch-size", "8", "--components", "irm"])
    assert "of one duet's players" in capsys.readouterr().out

    videos = tmp_path / "videos-run"  # the same run, as if trained on duet videos
    shutil.copytree(run, videos)
    config = videos / "config.yaml"
    config.write_text(config.read_text().replace("duets: solo_pairs", "duets: videos"))
    with pytest.raises(SystemExit) as exc:
        main([str(videos), "--components", "oracle"])
    assert str(exc.value).startswith("Error: ") and "duet videos" in str(exc.value)
