"""Two-tower training benchmark: throughput per epoch (1 and 2 processes) and the metrics table.

    RECSYS_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/training_bench.py \\
        [--datasets tiktok,ml-100k] [--nproc 1,2] [--epochs 2] [--runs runs/tiktok runs/ml-100k]

Throughput: for each dataset and process count, `recsys train` runs the dataset's default config
(`configs/<dataset>.toml`) as ONE tower (`train.ensemble=1`) for `--epochs` epochs in a fresh
directory (`artifacts/bench/training/<dataset>-np<N>`), and the table reads its metrics.json:
train examples per second (global, all ranks together) and seconds per epoch of the training
loop alone (the per-epoch valid evaluation is not in it), plus the command's wall time (start-up,
data, evaluation and export included). The throughput of an ensemble run is the same per member.

Metrics: for every run directory in `--runs` (made by the commands in BENCHMARKS.md) the valid
and test Recall/NDCG@10/20 of its metrics.json, i.e. exactly what `recsys evaluate --run DIR`
prints. Prints markdown tables; `--json PATH` also writes the raw figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "artifacts" / "bench" / "training"
METRICS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def throughput(dataset: str, nproc: int, epochs: int, threads: int) -> dict[str, Any]:
    """Train `epochs` epochs of one tower under `nproc` processes; the run's own timing figures."""
    run_dir = OUT / f"{dataset}-np{nproc}"
    command = [sys.executable, "-m", "commands.main", "train", "--dataset", dataset, "--out", str(run_dir),
               "--restart", "--no-progress", "--nproc", str(nproc), "--set", f"train.epochs={epochs}",
               "--set", "train.ensemble=1", "--set", f"train.threads={threads}"]
    load_before = load_average()
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["history"]
    return {"dataset": dataset, "nproc": nproc, "threads_per_process": threads, "epochs": len(history),
            "train_pairs": metrics["data"]["n_train_pairs"],
            "examples_per_second": sum(h["examples_per_second"] for h in history) / len(history),
            "epoch_seconds": sum(h["epoch_seconds"] for h in history) / len(history),
            "wall_seconds": wall, "load_before": load_before, "load_after": load_average(),
            "command": " ".join(["recsys", *command[3:]])}


def run_metrics(run_dir: Path) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    meta = json.loads((run_dir / "run.json").read_text())
    return {"run": str(run_dir), "dataset": meta["dataset"], "members": meta.get("ensemble", 1),
            "best_epoch": [m["best_epoch"] for m in metrics.get("members", [])] or [metrics["best_epoch"]],
            **{f"{split} {k}": metrics[split].get(k) for split in ("valid", "test") for k in METRICS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="tiktok,ml-100k")
    parser.add_argument("--nproc", default="1,2", help="Comma-separated process counts.")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process.")
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="Run directories for the metrics table.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"load average at start: {load_average()}  (nproc = {os.cpu_count()})\n")
    rows = [throughput(d, int(n), args.epochs, args.threads)
            for d in args.datasets.split(",") if d for n in args.nproc.split(",") if n]
    if rows:
        print("| dataset | processes | threads/process | train pairs | examples/s | s / epoch (train loop) "
              "| wall s (whole command) | load before → after |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            print(f"| {r['dataset']} | {r['nproc']} | {r['threads_per_process']} | {r['train_pairs']:,} | "
                  f"{r['examples_per_second']:,.0f} | {r['epoch_seconds']:.2f} | {r['wall_seconds']:.0f} | "
                  f"{r['load_before']} → {r['load_after']} |")
        print()
    tables = [run_metrics(p) for p in args.runs]
    if tables:
        print("| run | dataset | members | best epoch(s) | " + " | ".join(f"{s} {k}" for s in ("valid", "test")
                                                                       for k in METRICS) + " |")
        print("|---|---|---:|---|" + "---:|" * (2 * len(METRICS)))
        for t in tables:
            cells = " | ".join(f"{t[f'{s} {k}']:.4f}" for s in ("valid", "test") for k in METRICS)
            print(f"| {t['run']} | {t['dataset']} | {t['members']} | {','.join(map(str, t['best_epoch']))} | {cells} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"throughput": rows, "runs": tables}, indent=2))


if __name__ == "__main__":
    main()
