"""``ial.training.engines.init_distributed`` / ``close_distributed``: the rank's process group,
started once (a second call reuses it), handed to DeepSpeed, and ended. In a child process, so
this test's group is not the one pytest's in-process training runs share."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

CHECK = """
import torch.distributed as dist
from ial.training.engines import (close_distributed, import_deepspeed, init_distributed,
                                  single_process_env)

single_process_env()
deepspeed = import_deepspeed("gloo")
init_distributed(deepspeed, "gloo", 30)
group = dist.group.WORLD
init_distributed(deepspeed, "gloo", 30)  # a later in-process run: the same group
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
