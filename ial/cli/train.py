"""``ial train``: DeepSpeed training of the separator + critic (the CLI of the ``train`` flow)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ial.cli.options import build_config, config_options, root_option

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train" / "default.yaml"


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@root_option
@click.option("--dataset", default=None,
              help="Shards dataset under <root>/shards/ (default from config).")
@click.option("--run-name", default=None,
              help="Run name: checkpoints/<run-name>/ (default from config).")
@click.option("--num-procs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes per node. 1: train in this process (no launcher needed). >1: the "
                   "`deepspeed` launcher starts them (gloo on CPU, nccl on GPU per the config).")
@click.option("--hostfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="DeepSpeed hostfile (`host slots=N` lines) for several nodes; --num-procs is "
                   "then the processes per node.")
@click.option("--master-port", type=int, default=None,
              help="Rendezvous port (default: a free port; required with --no-ssh).")
@click.option("--master-addr", default=None, metavar="HOST",
              help="Rendezvous host: the first hostfile node's address (default: DeepSpeed asks "
                   "it over ssh; required with --no-ssh).")
@click.option("--no-ssh", is_flag=True,
              help="Start only this node's ranks (every node runs the same command with its own "
                   "--node-rank: the Kubernetes job's way); needs --hostfile, --master-addr, "
                   "--master-port.")
@click.option("--node-rank", type=click.IntRange(min=0), default=None,
              help="This node's position in the hostfile (with --no-ssh).")
@click.option("--init-from", default=None, metavar="URL",
              help="Warm-start the separator from a model.pt (or run dir); fresh optimizers.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@config_options(str(DEFAULT_CONFIG), example="method.lambda_ind=0.1")
def command(root, dataset, run_name, num_procs, hostfile, master_port, master_addr, no_ssh,
            node_rank, init_from, no_progress, config_path, overrides):
    """Train the IAL separator and independency critic with DeepSpeed.

    \b
    One process on CPU (sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT itself):
      ial train --config configs/train/demo.yaml --root ./data
    Several processes on this machine (deepspeed launcher, free --master_port):
      ial train --num-procs 2 --set num_workers=1
    Several nodes (same code, env and storage root on every node, passwordless ssh):
      ial train --hostfile hostfile --num-procs 8 --config configs/train/gpu.yaml --root s3://b/ial
    Several nodes without ssh (each node runs this with its own --node-rank):
      ial train --hostfile hostfile --no-ssh --node-rank 0 --master-addr node1 --master-port 29500
    Resume: run the same command again; it continues from checkpoints/<run>/deepspeed/latest.json
    (exact: step, both optimizers, memory bank, RNG, loader position). `--set resume=false`
    starts over. Writes model.pt, best/model.pt, metrics.jsonl and tensorboard/ under
    <root>/checkpoints/<run>/. See docs/training.md.
    One value of the DeepSpeed JSON the config names, without copying the file:
      ial train --set deepspeed.gradient_clipping=1 --set deepspeed.critic.optimizer.params.lr=3e-4
    """
    from ial.training.config import TrainConfig
    from ial.training.launcher import launch

    cfg = build_config(TrainConfig, config_path, overrides, root=root, dataset=dataset,
                       run_name=run_name, init_from=init_from)
    in_process = num_procs == 1 and hostfile is None
    result = launch(cfg, num_procs=num_procs, hostfile=hostfile, master_port=master_port,
                    in_process=in_process, progress=not no_progress, no_ssh=no_ssh,
                    node_rank=node_rank, master_addr=master_addr)
    click.echo(json.dumps(result, indent=2))
