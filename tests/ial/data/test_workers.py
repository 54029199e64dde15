"""ial.data.workers: loader workers end with the process that iterates the loader, even when it
is killed (their parent is the forkserver, so PyTorch's own parent check cannot see it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ial.data.synthetic import write_synthetic_shards
from ial.data.workers import process_alive
from tests.conftest import REPO, wait_until

# A trainer stand-in: iterates a 1-worker loader, reports its worker's and forkserver's pids, and
# waits to be killed.
TRAINER = """
import sys, time
from ial.data.loader import ShardStream, list_dataset_shards, scan_split
shards, classes = scan_split(list_dataset_shards(sys.argv[1], "toy"), "train")
stream = ShardStream(shards, classes, seed=0, rank=0, world_size=1, batch_size=2, num_workers=1,
                     segment_samples=512)
it = iter(stream.loader(stream.epoch(0)))
next(it)
worker = it._workers[0].pid
print(worker, open(f"/proc/{worker}/stat").read().rsplit(")", 1)[1].split()[1], flush=True)
time.sleep(600)
"""


def test_process_alive_tells_running_ended_and_zombie_processes():
    assert process_alive(os.getpid())
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert not process_alive(done.pid)  # ended and reaped
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie.send_signal(signal.SIGKILL)
    time.sleep(0.5)  # killed, not yet waited for: a zombie
    assert not process_alive(zombie.pid)
    zombie.wait()


def test_workers_and_their_forkserver_end_when_the_trainer_is_killed(tmp_path):
    write_synthetic_shards(str(tmp_path), shards=2, rows=8, splits=("train",))
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER, str(tmp_path)], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    try:
        worker, forkserver = map(int, trainer.stdout.readline().split())
        assert process_alive(worker) and process_alive(forkserver)
    finally:
        trainer.send_signal(signal.SIGKILL)  # no clean shutdown of the loader
        trainer.wait()
    wait_until(lambda: not process_alive(worker), 15, "the loader worker to end")
    wait_until(lambda: not process_alive(forkserver), 15, "the forkserver to end")


def test_a_stop_signal_to_the_trainer_s_group_leaves_its_workers_serving(tmp_path):
    """The launcher passes a stop to the rank's whole process group; the rank then finishes its
    step and saves, so a worker must not die of it while the rank waits for its next batch."""
    write_synthetic_shards(str(tmp_path), shards=2, rows=8, splits=("train",))
    serve = TRAINER.replace("time.sleep(600)", "input()\nprint(len(list(it)), flush=True)")
    trainer = subprocess.Popen([sys.executable, "-c", serve, str(tmp_path)], cwd=REPO,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        worker, _ = map(int, trainer.stdout.readline().split())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            os.kill(worker, signum)
        time.sleep(0.5)
        assert process_alive(worker)
        trainer.stdin.write("\n")
        trainer.stdin.flush()
        assert trainer.stdout.readline().strip() == "7"  # the epoch's other 7 batches arrive
    finally:
        trainer.kill()
        trainer.wait()
