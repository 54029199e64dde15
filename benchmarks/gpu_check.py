"""The first run on a GPU machine: every GPU path of the project, briefly (< 5 min on one GPU).

1. featurize: the same decoded frames through the ResNet-18 trunk on CUDA (``device: cuda``) and
   on CPU (the optimized CPU trunk); the CUDA features must match within ``--feature-tol``
   (relative to the features' scale; cuDNN may use TF32), and both rates are printed (clips/s);
2. train: ``ial train --config configs/train/gpu.yaml`` for 3 steps on synthetic full-size
   shards — NCCL, bf16 autocast, ZeRO-2 (``configs/deepspeed/gpu_bf16_zero2.json``), one rank
   per visible GPU (at most 2) — exactly the path a GPU run takes, selected by config only;
3. evaluate: the checkpoint of step 2 scored on CUDA and on CPU; every per-source SDR/SIR/SAR
   must agree within 0.01 dB;
4. layout: the training step (bf16 autocast) of ``configs/train/gpu.yaml``'s paper-size model and
   of ``configs/train/realistic.yaml``'s, NCHW vs channels-last (``TrainConfig.channels_last``),
   side by side (``separation_quality.step_throughput``); printed, no target. The dry runs
   measure the realistic recipe only, on the CPU.

Last lines: ``RESULT gpu_feature_rel_err=<x> target<=<tol>`` and
``RESULT gpu_eval_max_db_diff=<x> target<=0.01``. Exits 1 with ``Error: …`` when no CUDA device is
visible. ``--cpu-dry-run`` runs the same three steps with the CPU standing in for the GPU (gloo,
``cpu.json``): it checks the script itself on a machine without one, nothing about a GPU.

Usage: ``benchmarks/gpu_check.sh [--work DIR] [--cpu-dry-run] [--quick]`` (``--quick`` is the
dry run with the smallest sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def check_features(work: Path, device: str, clips: int, frame_size: int) -> tuple[float, dict]:
    """Relative max error of ``device`` features vs the CPU trunk, and clips/s of each."""
    from ial.demo.corpus import make_class_video
    from preprocessing.featurize.config import FeaturizeConfig
    from preprocessing.featurize.features import compute_features, decode_clip, load_backbone

    labels = ["violin", "flute", "bass", "drum"]
    paths = [make_class_video(work / f"clip{i}.mp4", labels[i % 4], 10.0, seed=i)
             for i in range(clips)]
    out, rates = {}, {}
    for name in ("cpu", device):
        cfg = FeaturizeConfig(frame_size=frame_size, device=name, torch_threads=os.cpu_count() or 1)
        backbone, _ = load_backbone(cfg)
        decoded = [decode_clip(p, cfg) for p in paths]
        compute_features([dict(decoded[0])], backbone)  # warm-up (cuDNN autotune, allocations)
        t0 = time.perf_counter()
        compute_features(decoded, backbone)
        rates[name] = clips / (time.perf_counter() - t0)
        out[name] = np.stack([d["frame_features"] for d in decoded])
    scale = float(np.abs(out["cpu"]).max()) or 1.0
    return float(np.abs(out[device] - out["cpu"]).max()) / scale, rates


def train_briefly(work: Path, gpu: bool, quick: bool) -> str:
    """3 steps of the GPU training config on synthetic shards; returns the checkpoint URL."""
    from ial.data.synthetic import write_synthetic_shards
    from ial.training.launcher import launch

    root = str(work / "root")
    k, h = (1, 2) if quick else (3, 14)
    write_synthetic_shards(root, "gpucheck", shards=2, rows=16, samples=110250,
                           feature_shape=(k, 512, h, h), splits=("train", "train", "test"))
    overrides = ["steps=3", "val_every=3", "checkpoint_every=2", "log_every=1", "val_mixtures=2",
                 "num_workers=0", "val_fraction=0", "dataset=gpucheck",
                 f"root={root}", "run_name=gpucheck"]
    if not gpu:  # the dry run: the same command with the CPU standing in
        overrides += ["backend=gloo", "deepspeed=configs/deepspeed/cpu.json"]
    if quick:
        overrides += ["model.audio_channels=[4,4,4,4]", "model.embed_dim=8",
                      "model.common_hidden=8", "method.critic_ndf=4", "segment_samples=16383",
                      "batch_size=4", "method.drop_hardest=0"]
    import torch

    procs = min(2, torch.cuda.device_count()) if gpu else 1
    cfg_path = REPO / "configs" / "train" / "gpu.yaml"
    result = launch(str(cfg_path), num_procs=procs, overrides=overrides, progress=False)
    metrics = [json.loads(x) for x in Path(root, "checkpoints", "gpucheck", "metrics.jsonl")
               .read_text().splitlines() if x.strip()]
    steps = [m for m in metrics if m.get("split") == "train"]
    losses = [v for m in steps for k, v in m.items() if k.endswith("loss")]
    if len(steps) != 3 or not losses or not all(np.isfinite(losses)):
        raise RuntimeError(f"training did not log 3 steps of finite losses: {steps}")
    print(f"train: {procs} rank(s), losses {[round(x, 4) for x in losses]}, "
          f"checkpoint {result['checkpoint']}")
    return result["checkpoint"]


def compare_evaluations(work: Path, checkpoint: str, device: str, quick: bool) -> float:
    """Max |Δ| (dB) of every per-source SDR/SIR/SAR between ``device`` and CPU evaluations."""
    from ial.config import load_config
    from ial.evaluate import EvalConfig, evaluate

    scores = {}
    for name in ("cpu", device):
        cfg = load_config(EvalConfig, REPO / "configs/eval/default.yaml",
                          ["split=test", "n_per_combination=1", "num_examples=0",
                           f"device={name}", "oracles=[]"]
                          + (["window_hop=null"] if quick else []),
                          checkpoint=checkpoint, data=str(work / "root" / "shards" / "gpucheck"),
                          out=str(work / f"report-{name.replace(':', '')}"))
        report = evaluate(cfg, progress=False)
        results = json.loads(Path(report["report_dir"], "results.json").read_text())
        scores[name] = np.array([[m["scores"]["model"][k] for k in ("sdr", "sir", "sar")]
                                 for m in results["mixtures"] if m["scores"]])
    if scores["cpu"].size == 0:
        raise RuntimeError("the evaluation scored no mixture")
    return float(np.abs(scores[device] - scores["cpu"]).max())


def compare_layouts(device: str, quick: bool) -> dict[str, float]:
    """channels-last / NCHW training-step speed ratio per recipe on ``device``."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from separation_quality import step_throughput

    recipes = {"configs/train/realistic.yaml": 7}  # frame features: 112-px frames, dilated
    if device != "cpu":
        recipes = {"configs/train/gpu.yaml": 14, **recipes}  # 224-px frames
    ratios = {}
    for config, hw in recipes.items():
        rates = step_throughput(quick, config, device, frame_hw=hw)
        ratios[config] = rates["after"] / rates["before"]
    return ratios


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="no GPU: run the same steps on the CPU (checks the script only)")
    p.add_argument("--quick", action="store_true", help="the dry run, smallest sizes")
    p.add_argument("--feature-tol", type=float, default=1e-2,
                   help="largest feature error relative to the features' scale")
    a = p.parse_args(argv)
    import torch

    dry = a.cpu_dry_run or a.quick
    if not dry and not torch.cuda.is_available():
        print("Error: no CUDA device is visible (torch.cuda.is_available() is False); "
              "--cpu-dry-run checks the script on a CPU", file=sys.stderr)
        return 1
    device = "cpu" if dry else "cuda"
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if dry else "cuda")
    work = Path(a.work or tempfile.mkdtemp(prefix="ial-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        rel, rates = check_features(work, device, 4 if a.quick else 16, 64 if a.quick else 224)
        print(f"featurize: {device} vs cpu relative max error {rel:.2e}; clips/s "
              + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
        checkpoint = train_briefly(work, not dry, a.quick)
        diff = compare_evaluations(work, checkpoint, device, a.quick)
        print(f"evaluate: {device} vs cpu max per-source difference {diff:.4f} dB")
        ratios = compare_layouts(device, a.quick)
        print("layout: channels-last / NCHW training-step speed "
              + ", ".join(f"{k} x{v:.2f}" for k, v in ratios.items()))
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    note = "; CPU dry run: says nothing about a GPU" if dry else ""
    print(f"({time.perf_counter() - t0:.0f} s{note})")
    print(f"RESULT gpu_feature_rel_err={rel:.2e} target<={a.feature_tol:g}")
    print(f"RESULT gpu_eval_max_db_diff={diff:.4f} target<=0.01")
    return 0 if rel <= a.feature_tol and diff <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
