"""Benchmark: the DeepSpeed training step vs a plain PyTorch loop, and the loader vs the step.

1. Step overhead. Two identical ``IALMethod`` (same seed, same model/method configs) train on the
   same MixBatch for the same step indices (after the λ_ind ramp: adversarial term every 3rd
   step, critic every step):
   - deepspeed: ``ial.training.engines.train_step`` with the two engines of
     ``configs/deepspeed/cpu.json`` (``gpu_bf16_zero2.json`` on a GPU), exactly what
     ``ial.training`` runs;
   - baseline: a plain PyTorch loop — the same losses, ``torch.optim.Adam`` with the same
     hyper-parameters, ``clip_grad_norm_`` with the same threshold.
   Steps alternate one by one between the two (the order flips every step, so drift in machine
   load hits both); the ratio of median wall-clock step times is the result (target ≤ 1.10), and
   the ratio of process CPU times is printed beside it (robust to other load on the machine).
2. Loader headroom. ``ial.data.ShardStream`` (``--workers`` processes; by default the
   ``num_workers`` a run here would use: ``gpu.yaml``'s 6 on a GPU, ``default.yaml``'s 2 on CPU)
   over synthetic full-size shards (10 s clips, 65535-sample crops): its steady samples/s vs the
   DeepSpeed step's samples/s (target ≥ 3×). ``--loader-root s3://bucket/prefix`` reads the
   shards from there (what a run with an S3 root does), and prints a local folder's rate beside.

Runs unchanged on a GPU (NCCL backend, bf16 autocast, ZeRO-2 config, CUDA tensors). The last line
is ``RESULT deepspeed_step_ratio=<x> target<=1.10``; the line before it
``RESULT loader_vs_step=<x> target>=3``.

    python benchmarks/train_step.py           # demo model, batch 8, 20 steps per side
    python benchmarks/train_step.py --quick   # batch 4, 6 steps per side, 64 loader clips
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402


def synthetic_clips(model_cfg, batch: int, samples: int, frames: int = 1, hw: int = 7):
    """A ClipBatch of tones with 4 labels. Shape: audio (B, samples), visual (B, K, C, hw, hw)."""
    from ial.method.mixing import ClipBatch

    g = torch.Generator().manual_seed(0)
    t = torch.arange(samples) / 11025.0
    labels = torch.arange(batch) % 4
    audio = torch.stack([0.5 * torch.sin(2 * torch.pi * 220.0 * (1 + int(k)) * t) for k in labels])
    audio = audio + 0.05 * torch.randn(batch, samples, generator=g)
    visual = torch.randn(batch, frames, model_cfg.input_channels, hw, hw, generator=g)
    return ClipBatch(audio, visual, labels, [f"clip{i}" for i in range(batch)])


def plain_step(method, opt_sep, opt_critic, mix, step: int, clip: float) -> None:
    """The same step as ``ial.training.engines.train_step`` in plain PyTorch."""
    with method.critic_frozen():
        loss, _, components = method.separator_loss(mix, step)
        loss.backward()
    torch.nn.utils.clip_grad_norm_(method.separator.parameters(), clip)
    opt_sep.step()
    opt_sep.zero_grad(set_to_none=True)
    if method.critic_due(step):
        c_loss, _ = method.critic_loss(components, step, labels=method.component_labels(mix))
        c_loss.backward()
        torch.nn.utils.clip_grad_norm_(method.critic.parameters(), clip)
        opt_critic.step()
        opt_critic.zero_grad(set_to_none=True)


def adam_for(params, ds_cfg: dict) -> torch.optim.Optimizer:
    p = ds_cfg["optimizer"]["params"]
    return torch.optim.Adam(params, lr=p["lr"], betas=tuple(p["betas"]), eps=p["eps"],
                            weight_decay=p["weight_decay"])


def plain_method(model_cfg, method_cfg, ds_sep: dict, ds_critic: dict, device="cpu",
                 channels_last: bool = False):
    """``(method, separator Adam, critic Adam)``: an ``IALMethod`` seeded 0 with the parameter
    shapes DeepSpeed's copy has, and the optimizers its DeepSpeed configs describe."""
    from ial.method.objective import IALMethod
    from ial.training.engines import to_channels_last, vectorize_scalar_parameters

    torch.manual_seed(0)
    method = IALMethod(model_cfg, method_cfg).to(device)
    vectorize_scalar_parameters(method)
    if channels_last:
        to_channels_last(method)
    return (method, adam_for(method.separator.parameters(), ds_sep),
            adam_for(method.critic.parameters(), ds_critic))


def grad_clip(ds_sep: dict) -> float:
    """The separator config's gradient-clipping norm (inf: none)."""
    return float(ds_sep.get("gradient_clipping", 0.0)) or float("inf")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_steps(args) -> tuple[float, float, float]:
    """(median DeepSpeed step s, median plain step s, batch samples)."""
    from ial.config import load_config
    from ial.method.config import MethodConfig
    from ial.method.objective import IALMethod
    from ial.models import ModelConfig
    from ial.signal import SEGMENT_SAMPLES
    from ial.training.config import TrainConfig, deepspeed_configs
    from ial.training.engines import (build_engines, init_distributed, single_process_env,
                                      train_step)

    gpu = torch.cuda.is_available()
    backend = "nccl" if gpu else "gloo"
    ds_file = "configs/deepspeed/gpu_bf16_zero2.json" if gpu else "configs/deepspeed/cpu.json"
    model_cfg = load_config(ModelConfig, args.model)
    method_cfg = load_config(MethodConfig, args.method)
    train_cfg = TrainConfig(deepspeed=ds_file, batch_size=args.batch_size)
    ds_sep, ds_critic = deepspeed_configs(train_cfg, 1)
    single_process_env()
    deepspeed = init_distributed(backend)

    torch.manual_seed(0)
    ds_method = IALMethod(model_cfg, method_cfg)
    sep, critic, _ = build_engines(ds_method, ds_sep, ds_critic, deepspeed)
    device = sep.device
    plain, opt_sep, opt_critic = plain_method(model_cfg, method_cfg, ds_sep, ds_critic, device)
    clip = grad_clip(ds_sep)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu)

    clips = synthetic_clips(model_cfg, args.batch_size, SEGMENT_SAMPLES)
    mix = ds_method.mixtures(clips, torch.Generator().manual_seed(1)).to(device)
    first = max(method_cfg.lambda_ind_steps + [0]) + 3  # after the λ_ind ramp
    print(f"device {device}, backend {backend}, DeepSpeed config {ds_file}; model "
          f"{model_cfg.name} ({sum(p.numel() for p in plain.separator.parameters())} separator "
          f"parameters), batch {args.batch_size} clips → {mix.mixture.shape[0]} mixtures of "
          f"{SEGMENT_SAMPLES} samples; torch threads {torch.get_num_threads()}")
    for step in range(first, first + 2):  # warm-up both
        train_step(ds_method, sep, critic, mix, step)
        with autocast:
            plain_step(plain, opt_sep, opt_critic, mix, step, clip)
    times = {"ds": [], "plain": []}
    cpu = {"ds": 0.0, "plain": 0.0}
    step = first + 2
    for r in range(args.rounds):  # one step of each, alternating which goes first
        for i in range(args.steps):
            for kind in (("ds", "plain") if (r + i) % 2 == 0 else ("plain", "ds")):
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                if kind == "ds":
                    train_step(ds_method, sep, critic, mix, step)
                else:
                    with autocast:
                        plain_step(plain, opt_sep, opt_critic, mix, step, clip)
                sync(device)
                times[kind].append(time.perf_counter() - t0)
                cpu[kind] += time.process_time() - c0
            step += 1
    print(f"process CPU time (robust to other load on the machine): deepspeed {cpu['ds']:.2f} s, "
          f"plain {cpu['plain']:.2f} s → ratio {cpu['ds'] / cpu['plain']:.3f}")
    ds_times, plain_times = times["ds"], times["plain"]
    return statistics.median(ds_times), statistics.median(plain_times), args.batch_size


@contextlib.contextmanager
def loader_root(url: str | None):
    """Where the loader's synthetic shards go: a new temporary folder (``url`` None), or a new
    folder under ``url`` (say ``s3://bucket/prefix``; removed afterwards)."""
    from ial.storage import join, remove

    if url is None:
        with tempfile.TemporaryDirectory(prefix="ial-bench-loader-") as root:
            yield root
        return
    root = join(url, f"ial-bench-loader-{os.getpid()}-{int(time.time())}")
    try:
        yield root
    finally:
        remove(root, recursive=True)


def bench_loader(args, model_cfg_path: str, url: str | None = None) -> float:
    """Steady samples/s of the shard loader over synthetic full-size shards written under
    ``url`` (``loader_root``: None, a local temporary folder)."""
    from ial.config import load_config
    from ial.data.loader import LoaderPosition, ShardStream, list_dataset_shards, scan_split
    from ial.data.synthetic import write_synthetic_shards
    from ial.models import ModelConfig
    from ial.signal import CLIP_SAMPLES

    model_cfg = load_config(ModelConfig, model_cfg_path)
    with loader_root(url) as root:
        per_shard = 32
        write_synthetic_shards(root, "bench", shards=max(1, args.loader_clips // per_shard),
                               rows=per_shard, samples=CLIP_SAMPLES, splits=("train",),
                               feature_shape=(3, model_cfg.input_channels, 7, 7))
        shards, classes = scan_split(list_dataset_shards(root, "bench"), "train")
        stream = ShardStream(shards, classes, seed=0, rank=0, world_size=1,
                             batch_size=args.batch_size, num_workers=args.workers)
        it = stream.batches(LoaderPosition())
        t_start = time.perf_counter()
        next(it)  # worker start-up and the first shard read
        t0 = time.perf_counter()
        n = 0
        while stream.position.epoch == 0:
            batch = next(it)
            if batch.epoch != 0:
                break
            n += batch.audio.shape[0]
        steady = n / (time.perf_counter() - t0)
        total = (n + args.batch_size) / (time.perf_counter() - t_start)
    print(f"loader ({url or 'local folder'}): {args.workers} workers, {n + args.batch_size} "
          f"clips of {CLIP_SAMPLES} samples + (3, {model_cfg.input_channels}, 7, 7) features: "
          f"steady {steady:.1f} samples/s (with start-up {total:.1f} samples/s)")
    return steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds/steps/clips (< 1 min)")
    parser.add_argument("--model", default="configs/model/demo.yaml")
    parser.add_argument("--method", default="configs/method/demo.yaml")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per step (8; quick 4)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds (× --steps steps per side)")
    parser.add_argument("--steps", type=int, default=None, help="steps per side per round")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader worker processes (default: the num_workers of "
                             "configs/train/gpu.yaml on a GPU, 6; of default.yaml on CPU, 2)")
    parser.add_argument("--loader-clips", type=int, default=None)
    parser.add_argument("--loader-root", default=None,
                        help="read the loader's shards from here, e.g. s3://bucket/prefix (with "
                             "AWS_ENDPOINT_URL for a non-AWS S3 API): written under a new folder, "
                             "removed after; a local folder's rate is measured beside it "
                             "(default: a local temporary folder only)")
    args = parser.parse_args()
    if args.loader_root is not None:  # a missing bucket or refused keys: one line, before any work
        from ial.storage import Storage

        Storage(args.loader_root).check(what="--loader-root")
    args.batch_size = args.batch_size or (4 if args.quick else 8)
    args.rounds = args.rounds or (2 if args.quick else 4)
    args.steps = args.steps or (3 if args.quick else 5)
    args.loader_clips = args.loader_clips or (64 if args.quick else 256)
    gpu = torch.cuda.is_available()
    if args.workers is None:  # what a run on this machine's kind would use
        from ial.training.config import load_train_config

        recipe = "gpu.yaml" if gpu else "default.yaml"
        args.workers = load_train_config(f"configs/train/{recipe}").num_workers
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if gpu else "cpu")

    ds_s, plain_s, batch = bench_steps(args)
    ratio = ds_s / plain_s
    step_rate = batch / ds_s
    print(f"step: deepspeed {1000 * ds_s:.1f} ms, plain PyTorch {1000 * plain_s:.1f} ms "
          f"(median per step) → ratio {ratio:.3f}; {step_rate:.1f} samples/s")
    loader_rate = bench_loader(args, args.model, args.loader_root)
    if args.loader_root is not None:  # the same shards from a local folder, beside it
        local_rate = bench_loader(args, args.model)
        print(f"loader from {args.loader_root} / from a local folder: "
              f"{loader_rate / local_rate:.2f}")
    print(f"RESULT loader_vs_step={loader_rate / step_rate:.2f} target>=3")
    print(f"RESULT deepspeed_step_ratio={ratio:.3f} target<=1.10")


if __name__ == "__main__":
    from ial.errors import UserError

    try:
        main()
    except UserError as exc:  # a bad --loader-root: one line, as the ial command does
        sys.exit(f"Error: {exc}")
