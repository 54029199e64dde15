"""``ial.training.run_dir.RunLock``: one training at a time in a run directory (the lock itself:
``tests/ial/storage/test_locks.py``)."""

from __future__ import annotations

import pytest

from ial.errors import UserError
from ial.storage import exists
from ial.training.config import TrainConfig
from ial.training.run_dir import RunDir, RunLock


def test_a_second_training_of_a_run_is_refused_naming_the_run(tmp_path):
    run = RunDir(TrainConfig(root=str(tmp_path), run_name="r1"))
    with RunLock(run, "r1"):
        with pytest.raises(UserError, match=r"^run 'r1' is being trained already \(pid \d+ on .*"
                                            r"training\.lock\): wait for it to end or stop it, "
                                            r"or choose another --run-name; "):
            with RunLock(run, "r1"):
                pass
    assert not exists(run("training.lock"))
