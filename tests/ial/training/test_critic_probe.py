"""``ial.training.critic_probe``: which pairs a run's critic tells apart on its validation clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ial.data.synthetic import write_synthetic_shards
from ial.storage import Storage
from ial.training.config import TrainConfig
from ial.training.critic_probe import auc, main, pair_scores, probe_critic
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


def test_auc_counts_ties_half():
    assert auc(np.array([1.0, 2.0]), np.array([0.0])) == 1.0
    assert auc(np.array([1.0]), np.array([1.0, 2.0])) == 0.25


@pytest.mark.slow
def test_probe_of_a_trained_run_and_its_errors(tmp_path, capsys):
    root = str(tmp_path)
    write_synthetic_shards(root, "toy", shards=2, rows=16, samples=6000,
                           splits=("train", "val", "train", "train"))
    cfg = TrainConfig(root=root, dataset="toy", run_name="tiny", batch_size=4, steps=6,
                      segment_samples=4095, val_every=6, val_mixtures=2, checkpoint_every=3,
                      num_workers=0, seed=1,
                      model={"visual_channels": 8, "embed_dim": 8, "audio_channels": [4, 4, 4, 4],
                             "common_hidden": 8},
                      method={"bank_size": 16, "critic_ndf": 4, "critic_input_size": [16, 16],
                              "lambda_ind_steps": [0, 2], "drop_hardest": 0})
    launch(cfg, in_process=True, progress=False)
    run = Storage(root).url("checkpoints", "tiny")
    res = probe_critic(run, rounds=2, batch_size=4)
    assert res["dependent"]["n"] == 2 * res["n_mixtures"] > 0
    for kind in ("matched", "same", "other"):
        assert res[kind]["n"] == 4 * 2 * res["n_mixtures"] and 0 <= res[kind]["auc"] <= 1
    assert probe_critic(run, rounds=2, batch_size=4) == res  # seeded
    oracle = probe_critic(run, components="oracle", rounds=2, batch_size=4)
    assert oracle["dependent"]["mean"] != res["dependent"]["mean"]
    irm = probe_critic(run, components="irm", rounds=2, batch_size=4)
    assert irm["dependent"]["mean"] not in (res["dependent"]["mean"], oracle["dependent"]["mean"])

    for argv, message in (([str(tmp_path / "nothing")], "not a training run"),
                          ([run, "--rounds", "0"], "--rounds 0")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert str(exc.value).startswith("Error: ") and message in str(exc.value)
