"""Launching training: in this process, ``python -m ial.training`` in a subprocess, or the
``deepspeed`` launcher for several processes / nodes (``--hostfile``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

from ial.config import ConfigError, save_config, to_dict
from ial.errors import UserError
from ial.runtime import free_port
from ial.storage import exists, is_remote, read_text, remove, write_text
from ial.training.budget import HangUpOnClosedOutput, StopSignals
from ial.training.config import TrainConfig, load_train_config
from ial.training.engines import close_distributed, single_process_env
from ial.training.run_dir import RunDir
from ial.training.trainer import train

# After a stop passed on to ranks on other nodes (whose processes are not in the launcher's
# group): how long to wait for one of them to report its checkpoint (DeepSpeed's launch.py on
# each node kills its ranks 30 s after its own stop signal).
REMOTE_STOP_WAIT_S = 60


def _as_config(cfg_path_or_cfg: str | TrainConfig | None, overrides=()) -> TrainConfig:
    if isinstance(cfg_path_or_cfg, TrainConfig):
        if overrides:
            from ial.config import from_dict, merge, parse_overrides

            merged = merge(to_dict(cfg_path_or_cfg), parse_overrides(overrides))
            return from_dict(TrainConfig, merged)
        return cfg_path_or_cfg
    return load_train_config(cfg_path_or_cfg, overrides)


def launch(cfg_path_or_cfg: str | TrainConfig | None, num_procs: int = 1,
           hostfile: str | None = None, overrides=(), master_port: int | None = None,
           in_process: bool = False, progress: bool = True, env: dict | None = None,
           no_ssh: bool = False, node_rank: int | None = None,
           master_addr: str | None = None) -> dict:
    """Run training and return its result (the dict of ``train``, read from result.json).

    - one process, no hostfile: ``python -m ial.training`` in a subprocess with RANK/WORLD_SIZE/
      MASTER_* set (or in this process with ``in_process=True``);
    - ``num_procs`` > 1 or a hostfile: the ``deepspeed`` launcher with ``--num_gpus num_procs``
      (processes per node; on CPU too) and a free ``--master_port``; ``--hostfile`` for several
      nodes: the launcher starts every node's ranks over ssh (pdsh); each node needs the same
      environment and code (DeepSpeed exports the variables listed in ``$DS_ENV_FILE``), and
      the config is passed as a URL under the storage root so every node can read it;
    - ``no_ssh``: this node's ranks only (``node_rank`` in the hostfile, the Kubernetes job's
      way: every node runs the same command with its own rank); ``master_addr`` and
      ``master_port`` must then be given (every node must agree on them).
    """
    cfg = _as_config(cfg_path_or_cfg, overrides)
    if hostfile:
        note = local_root_note(read_hostfile(hostfile), cfg.root)
        if note:
            print(f"note: {note}", file=sys.stderr)
    run = RunDir(cfg)
    if in_process and num_procs == 1 and hostfile is None:
        single_process_env()
        return train(cfg, progress=progress)
    config_url = run("launch.yaml")
    save_config(cfg, config_url)
    child_env = dict(os.environ if env is None else env)
    if cfg.backend == "gloo":
        child_env.setdefault("DS_ACCELERATOR", "cpu")
        threads = max(1, (os.cpu_count() or 1) // max(1, num_procs))
        child_env.setdefault("OMP_NUM_THREADS", str(threads))
    args = ["--config", config_url] + ([] if progress else ["--no-progress"])
    if num_procs == 1 and hostfile is None:
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            child_env.pop(key, None)
        single_process_env(child_env)
        if master_port:
            child_env["MASTER_PORT"] = str(master_port)
        cmd = [sys.executable, "-m", "ial.training", *args]
    else:
        if no_ssh and (hostfile is None or node_rank is None or not master_addr
                       or not master_port):
            raise ConfigError("no_ssh", "a run without ssh needs --hostfile, --node-rank, "
                                        "--master-addr and --master-port (the same on every node)")
        launcher = Path(sys.executable).with_name("deepspeed")
        cmd = [str(launcher) if launcher.exists() else "deepspeed",
               "--master_port", str(master_port or free_port()), "--num_gpus", str(num_procs)]
        if hostfile:
            cmd += ["--hostfile", hostfile]
        if master_addr:
            cmd += ["--master_addr", master_addr]
        if no_ssh:
            cmd += ["--no_ssh", "--node_rank", str(node_rank)]
        cmd += ["--module", "ial.training", *args]
    # a rank that stops on a UserError (a signal's stop included) writes its one line here, under
    # the run's storage root, where ranks started over ssh on other nodes can write it too
    error_url = run(f"launch-{uuid.uuid4().hex[:12]}.error")
    cmd += ["--error-url", error_url]
    runner = cmd[0] != sys.executable  # the `deepspeed` runner, not one rank
    with _sigint_ignored(runner and StopSignals.available()):
        proc = subprocess.Popen(cmd, env=child_env, start_new_session=StopSignals.available())
    with StopSignals(forward_to=proc) as stop:  # Ctrl-C, SIGTERM: the ranks stop, saved
        proc.wait()
        stop.wait_for_group()
    # ranks started over ssh are not in that group: after a stop they may still be saving
    remote_stop = bool(stop.signal and proc.returncode and hostfile and not no_ssh)
    user_error = _rank_error(error_url, wait_s=REMOTE_STOP_WAIT_S if remote_stop else 0)
    if remote_stop and not user_error:
        raise UserError(f"training {cfg.run_name!r}: {stop.signal} was passed on to its ranks "
                        f"and none reported stopping within {REMOTE_STOP_WAIT_S} s; it resumes "
                        f"from its last checkpoint in {run.url} (see the ranks' output above)")
    if proc.returncode != 0:
        if user_error:  # a rank stopped on bad input: its one line, not "exited with code 1"
            raise UserError(user_error)
        raise RuntimeError(f"training {cfg.run_name!r} exited with code {proc.returncode}"
                           f"{_killed_by(proc.returncode)}; the output above says why; the same "
                           f"command resumes it from its last checkpoint in {run.url} "
                           f"({' '.join(cmd)})")
    return json.loads(read_text(run("result.json")))


# Signals that end a rank (a stop, the OOM killer, a crash) as DeepSpeed's launch.py reports them
_RANK_KILLERS = {signal.SIGINT, signal.SIGABRT, signal.SIGBUS, signal.SIGKILL, signal.SIGSEGV,
                 signal.SIGTERM}


def _killed_by(returncode: int) -> str:
    """`` (killed by SIGKILL: out of memory?)`` for a process a signal ended (a negative code,
    or DeepSpeed's ``launch.py`` passing on a rank's -N by ``sys.exit``: 256 - N), else ``""``."""
    number = -returncode if returncode < 0 else 256 - returncode
    if returncode > 0 and number not in _RANK_KILLERS:  # 255: an ssh failure, not SIGHUP
        return ""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return ""
    return f" (killed by {name}{': out of memory?' if name == 'SIGKILL' else ''})"


@contextlib.contextmanager
def _sigint_ignored(active: bool) -> Iterator[None]:
    """SIGINT ignored while the ``deepspeed`` runner is started, which keeps that: on one node
    it has no handler of its own, and the Ctrl-C that ``StopSignals`` passes to its process
    group ended it in a KeyboardInterrupt traceback. Its ``launch.py`` installs a handler of its
    own, but only after it has started the ranks, so they keep SIGINT ignored (``StopSignals``
    leaves it so) and stop on the SIGTERM that ``launch.py`` sends them."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if active else None
    try:
        yield
    finally:
        if active:
            signal.signal(signal.SIGINT, previous)


def read_hostfile(path: str) -> dict[str, int]:
    """DeepSpeed's hostfile as host → slots: a ``<host> slots=<n>`` line per host, ``#``
    comment lines and blank lines skipped (the rule of DeepSpeed's runner, which ends in a
    traceback where this raises a UserError naming the file and line)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"hostfile {path}: cannot be read ({exc})") from None
    hosts: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = re.match(r"(\S+)\s+slots=(\d+)", line)
        if not entry:
            raise UserError(f"hostfile {path}, line {number}: {line!r} is not "
                            "'<host> slots=<processes>'")
        if entry.group(1) in hosts:
            raise UserError(f"hostfile {path}, line {number}: host {entry.group(1)!r} is "
                            "listed twice")
        hosts[entry.group(1)] = int(entry.group(2))
    if not hosts:
        raise UserError(f"hostfile {path}: no '<host> slots=<processes>' line")
    return hosts


def local_root_note(hosts: dict[str, int], root: str) -> str | None:
    """What to know before ranks start on other hosts with a local storage root (they must see
    it at the same path: a shared filesystem), or None (an s3:// root, or this host only)."""
    here = {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
    others = sorted(h for h in hosts if h not in here)
    if is_remote(root) or not others:
        return None
    return (f"the storage root {root} is a local path, and the hostfile names other hosts "
            f"({', '.join(others)}): each must see it at that path (a shared filesystem), else "
            f"its ranks stop, saying so; an s3:// root needs nothing shared")


def _rank_error(url: str, wait_s: float) -> str:
    """The one line a rank wrote to ``url`` (then removed), "" if none: waiting up to ``wait_s``
    for it to appear (ranks on other nodes still saving after their runner has gone)."""
    deadline = time.monotonic() + wait_s
    while not exists(url):
        if time.monotonic() >= deadline:
            return ""
        time.sleep(0.5)
    message = read_text(url).strip()
    remove(url)
    return message


def main(argv: list[str] | None = None) -> None:
    """``python -m ial.training --config FILE [--set k=v ...]`` (what the launchers run per
    rank)."""
    parser = argparse.ArgumentParser(prog="python -m ial.training",
                                     description="Train the IAL separator + critic (one rank).")
    parser.add_argument("--config", default=None, help="TrainConfig YAML (path or URL)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field; repeatable")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help="set by the deepspeed launcher (LOCAL_RANK is used)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--error-url", default=None,
                        help="set by `launch`: where a rank writes its one-line error (a path or "
                             "URL its launcher reads, on any node); printed when not given")
    args = parser.parse_args(argv)
    # a rank whose output closes (its ssh connection, when its launcher stopped) stops and saves
    sys.stdout, sys.stderr = HangUpOnClosedOutput(sys.stdout), HangUpOnClosedOutput(sys.stderr)
    if args.error_url and args.config and not exists(args.config):
        # `launch` wrote the config under the storage root before starting the ranks: a rank
        # that cannot see it is on a node that does not share that root (a local --root with a
        # --hostfile), and the error file under that root would not reach the launcher either
        print(f"Error: rank {os.environ.get('RANK', '?')} on {socket.gethostname()} does not see "
              f"the run's config {args.config}, which the launcher wrote: every node of a "
              f"--hostfile run must see the same storage root (an s3:// root, or a shared "
              f"filesystem mounted at the same path on every node)", file=sys.stderr)
        sys.exit(2)
    try:
        cfg = load_train_config(args.config, args.overrides)
        result = train(cfg, progress=not args.no_progress)
    except UserError as exc:  # one line for the user
        if not _hand_to_launcher(args.error_url, str(exc)):  # else the launcher re-raises it
            print(f"Error: {exc}", file=sys.stderr)
        sys.exit(2)
    close_distributed()  # NCCL warns at exit of a process that leaves its group open
    if int(os.environ.get("RANK", "0")) == 0 and not args.error_url:
        print(json.dumps(result, indent=2))  # under ``launch``, its caller shows the result


def _hand_to_launcher(url: str | None, message: str) -> bool:
    """Write a rank's one-line error to ``url`` for ``launch`` to print once (every rank that
    fails writes the same line); False without a URL (a rank started without ``launch``) or
    when it cannot be written: the rank prints the line itself then."""
    if not url:
        return False
    try:
        write_text(url, message)
    except Exception:  # noqa: BLE001 - the line is printed instead
        return False
    return True
