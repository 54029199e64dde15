"""``ial.training.engines.init_distributed`` / ``close_distributed``: the rank's process group,
started once (a second call reuses it), handed to DeepSpeed, and ended; nccl on a host without a
GPU for the rank is one line naming ``backend``; a rank's error reaches the user once. In child
processes, so these groups are not the one pytest's in-process training runs share."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

CHECK = """
import torch.distributed as dist
from ial.training.engines import close_distributed, init_distributed, single_process_env

single_process_env()
deepspeed = init_distributed("gloo", 30)
group = dist.group.WORLD
assert init_distributed("gloo", 30) is deepspeed  # a later in-process run: the same group
assert dist.group.WORLD is group and dist.get_world_size() == 1 and dist.get_backend() == "gloo"
from deepspeed import comm
assert comm.is_initialized() and comm.get_world_size() == 1
close_distributed()
assert not dist.is_initialized()
close_distributed()  # nothing left to end: no error
print("ok")
"""


def test_the_process_group_is_started_once_and_ended():
    run = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible here")
@pytest.mark.parametrize("override, expected", [
    ("backend=nccl", "Error: config field 'backend': nccl needs a CUDA device for each process of "
                     "a host: local rank 0, this host sees 0 (backend: gloo runs on CPUs; or "
                     "fewer --num-procs)"),
    ('deepspeed={"optimizer": {"type": "Nope"}}',
     "Error: config field 'deepspeed': DeepSpeed refuses the separator's config: Nope is not a "
     "supported DeepSpeed Optimizer"),
])
def test_a_backend_or_deepspeed_config_the_rank_cannot_use_is_one_line(tmp_path, override,
                                                                       expected):
    from ial.data.synthetic import write_synthetic_shards

    root = str(tmp_path / "root")
    write_synthetic_shards(root, shards=1, rows=8, samples=6000)
    cli = [sys.executable, "-c", "from ial.cli import main; main()"]
    run = subprocess.run([*cli, "train", "--config", "configs/train/demo.yaml",
                          "--set", override, "--set", f"root={root}", "--set", "dataset=toy",
                          "--set", "steps=1", "--no-progress"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [expected]


@pytest.mark.slow
def test_ranks_launched_by_the_deepspeed_launcher_print_their_error_once(tmp_path):
    """Both ranks stop on the same bad input; the user sees one ``Error:`` line (the ranks hand
    it to ``launch``, which re-raises it), not one per rank plus the launcher's."""
    cli = [sys.executable, "-c", "from ial.cli import main; main()"]
    run = subprocess.run([*cli, "train", "--config", "configs/train/demo.yaml",
                          "--num-procs", "2", "--set", f"root={tmp_path}", "--set", "dataset=none"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode != 0
    errors = [x for x in run.stderr.splitlines() if "Error:" in x]
    assert errors == [f"Error: no complete shards of dataset 'none' under "
                      f"{tmp_path}/shards/none: featurize it first (ial featurize --root "
                      f"{tmp_path} --dataset none)"], run.stderr[-2000:]
