"""The demo: generate a small audio-visual corpus and run all four stages on it, end to end.

    generate corpus (mp4 + VGGSound csv) → serve it on a loopback HTTP server (Range-capable)
    → ingest (yt-dlp exact sections, ffmpeg clips)  → featurize (Dask LocalCluster, Parquet shards)
    → train (DeepSpeed, one CPU process)            → evaluate (SDR/SIR/SAR, oracle rows, report)

Each stage runs through its Prefect flow on the embedded (ephemeral) Prefect API, exactly as a
deployment would run it, with the stage's demo config from ``configs/<stage>/demo.yaml``.
Re-running the demo resumes: clips already ingested, shards already written and training
already done are not redone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ial.config import save_config
from ial.storage import Storage

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class DemoConfig:
    """What the demo generates and where it writes."""

    root: str = "./data"  # storage root (local dir or s3://bucket/prefix)
    dataset: str = "demo"
    corpus_dir: str = "./data/demo_corpus"  # local: the video server serves it
    classes: list[str] = field(default_factory=lambda: ["violin", "flute", "bass", "drum"])
    videos_per_class: int = 24
    seed: int = 0
    ingest_config: str = str(CONFIGS / "ingest" / "demo.yaml")
    featurize_config: str = str(CONFIGS / "featurize" / "demo.yaml")
    train_config: str = str(CONFIGS / "train" / "demo.yaml")
    eval_config: str = str(CONFIGS / "eval" / "demo.yaml")
    run_name: str = "demo"

    def validate(self) -> None:
        from ial.config import ConfigError

        if len(self.classes) < 2:
            raise ConfigError("classes", "the demo needs at least 2 classes to mix")
        if self.videos_per_class < 4:
            raise ConfigError("videos_per_class", "needs >= 4 (train/val/test splits)")


def _stage(name: str) -> float:
    print(f"\n=== {name} " + "=" * max(0, 66 - len(name)), flush=True)
    return time.monotonic()


def _done(t0: float) -> None:
    print(f"    ({time.monotonic() - t0:.0f} s)", flush=True)


def run_demo(cfg: DemoConfig) -> dict:
    """Run the whole pipeline on a generated corpus; returns each stage's summary."""
    from flows.api import shared_api
    from flows.evaluate import evaluate_flow
    from flows.featurize import featurize_flow
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from ial.demo.corpus import generate_corpus
    from ial.demo.video_server import VideoServer
    from ial.evaluate import format_table

    root = Storage(cfg.root)
    save_config(cfg, root.url("demo_config.yaml"))
    results: dict = {}

    t0 = _stage("1/5 generate demo corpus")
    corpus = generate_corpus(cfg.corpus_dir, classes=cfg.classes,
                             videos_per_class=cfg.videos_per_class, seed=cfg.seed)
    print(f"    {corpus.manifest} ({corpus.num_videos} videos)")
    _done(t0)

    with shared_api():
        with VideoServer(corpus.videos_dir) as server:
            t0 = _stage("2/5 ingest (yt-dlp from a loopback server, ffmpeg slicing)")
            results["ingest"] = ingest_flow(
                manifest=str(corpus.manifest), manifest_format="vggsound", root=root.root,
                dataset=cfg.dataset, config=cfg.ingest_config,
                overrides=[f"url_template={server.url_template}"],
            )
            _done(t0)

        t0 = _stage("3/5 featurize (Dask LocalCluster → Parquet shards)")
        results["featurize"] = featurize_flow(root=root.root, dataset=cfg.dataset,
                                              config=cfg.featurize_config)
        _done(t0)

        t0 = _stage("4/5 train (DeepSpeed, 1 CPU process)")
        results["train"] = train_flow(root=root.root, dataset=cfg.dataset,
                                      config=cfg.train_config,
                                      overrides=[f"run_name={cfg.run_name}"], progress=True)
        _done(t0)

        t0 = _stage("5/5 evaluate (held-out test clips)")
        results["evaluate"] = evaluate_flow(
            checkpoint=results["train"]["checkpoint"], data=root.url("shards", cfg.dataset),
            mix=2, config=cfg.eval_config,
        )
        _done(t0)

    print("\n" + format_table(results["evaluate"]))
    print(f"Report: {results['evaluate']['report_dir']}  (open report.html)")
    return results
