"""``python -m ial.training``, the rank entry point that ``ial.training.launcher.launch`` starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.conftest import REPO


def test_a_rank_on_a_node_without_the_storage_root_says_so(tmp_path):
    """``launch`` writes the run's config under the storage root before it starts the ranks; a
    rank on a node that does not see that root (a local ``--root`` with a ``--hostfile``) says
    so itself, since its error file under that root would never reach the launcher."""
    run_dir = tmp_path / "checkpoints" / "run"  # as on the other node: nothing there
    env = dict(os.environ, RANK="3")
    proc = subprocess.run([sys.executable, "-m", "ial.training", "--config",
                           str(run_dir / "launch.yaml"), "--error-url",
                           str(run_dir / "launch-1.error")],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"Error: rank 3 on {socket.gethostname()} does not see the run's config "
        f"{run_dir / 'launch.yaml'}, which the launcher wrote: every node of a --hostfile run "
        f"must see the same storage root (an s3:// root, or a shared filesystem mounted at the "
        f"same path on every node)"]
    assert not tmp_path.joinpath("checkpoints").exists()  # no error file left on this node


def test_a_rank_a_signal_ended_is_named():
    from ial.training.launcher import _killed_by

    assert _killed_by(-9) == _killed_by(247) == " (killed by SIGKILL: out of memory?)"
    assert _killed_by(-15) == " (killed by SIGTERM)"
    assert _killed_by(1) == _killed_by(0) == _killed_by(255) == ""  # 255: ssh's own failure


def test_a_local_root_with_other_hosts_gets_a_note_before_the_ranks_start():
    from ial.training.launcher import local_root_note

    here = socket.gethostname()
    note = local_root_note({here: 1, "node2": 1, "node3": 2}, "./data")
    assert note.startswith("the storage root ./data is a local path, and the hostfile names "
                           "other hosts (node2, node3): each must see it at that path")
    assert local_root_note({here: 2, "localhost": 1}, "./data") is None  # this host only
    assert local_root_note({"node2": 1}, "s3://bucket/ial") is None
