"""Generalisation: the default recipe on a dataset no config was tuned for, against the baselines.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/generalisation_bench.py \\
        [--folder artifacts/unseen/ml100k-random] [--run runs/unseen-default] [--baselines ...] [--json PATH]

1. Builds the unseen dataset (`benchmarks/unseen_dataset.py`: ML-100K interactions only, new ids,
   random per-user 80/10/10 split) unless the folder exists.
2. `recsys train --dataset FOLDER --out RUN` with no config: the run log's first line says it
   used the built-in robust recipe (skipped when RUN already holds a finished run).
3. Every baseline through `recsys evaluate --baseline NAME --dataset FOLDER` (same harness, same
   split, train items masked), on valid and test.
Prints one Markdown table (valid and test Recall/NDCG@10/20, fit seconds) for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.unseen_dataset import build  # noqa: E402
from training.evaluation import evaluate_baseline, evaluate_run, to_jsonable  # noqa: E402

BASELINES = ("most-popular", "itemknn", "bpr-mf", "lightgcn")
METRICS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")


def train_default(folder: Path, run: Path) -> tuple[float, str]:
    """`recsys train` with no config (resumes a finished run instantly); wall seconds and the config line."""
    # Paths relative to the repository, as in BENCHMARKS.md: the dataset path is part of the config
    # fingerprint, so the same spelling resumes the finished run instead of refusing it.
    command = [sys.executable, "-m", "commands.main", "train", "--dataset", os.path.relpath(folder, ROOT),
               "--out", os.path.relpath(run, ROOT), "--no-progress", "--set", "train.threads=1"]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    origin = next((line for line in done.stdout.splitlines() if line.startswith("config:")), "")
    return time.perf_counter() - began, origin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "artifacts" / "unseen" / "ml100k-random")
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "unseen-default")
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (args.folder / "interactions.csv").exists():
        build(args.folder)
    rows = []
    wall, origin = train_default(args.folder, args.run)
    model = {split: evaluate_run(args.run, split) for split in ("valid", "test")}
    rows.append({"model": "two-tower, built-in default recipe", "wall_s": wall, **model, "note": origin})
    for name in filter(None, args.baselines.split(",")):
        began = time.perf_counter()
        report = {split: evaluate_baseline(name, str(args.folder), split) for split in ("valid", "test")}
        rows.append({"model": name, "wall_s": time.perf_counter() - began, **report})
    print("| model | valid N@20 | test R@20 | test N@20 | test R@10 | test N@10 | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t = r["test"]
        print(f"| {r['model']} | {r['valid']['ndcg@20']:.4f} | " + " | ".join(f"{t[k]:.4f}" for k in METRICS)
              + f" | {r['wall_s']:.0f} |")
    print(f"\n{origin}\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps(to_jsonable(rows), indent=2))


if __name__ == "__main__":
    main()
