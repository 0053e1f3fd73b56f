"""Baselines on the two benchmark protocols: the bar a trained two-tower model must clear.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/baselines_bench.py [--out results.json]

Runs MostPopular, ItemKNN and BPR-MF (settings tuned on `valid`, see recsys.baselines.TUNED)
through the evaluation harness on
- TikTok, predefined DiffMM split, `test` (published protocol: rank all items, mask train items);
- ML-100K, leave-last-out, `test` (same masking),
and prints a Markdown table (Recall@20, NDCG@20, NDCG@10, fit and evaluation seconds) for
BENCHMARKS.md "## Baselines".
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

from training.evaluation import evaluate_baseline, to_jsonable

PROTOCOLS = (("tiktok", "predefined"), ("ml-100k", "leave-last-out"))
BASELINES = ("most-popular", "itemknn", "bpr-mf")


def run(datasets: list[str], baselines: list[str]) -> list[dict]:
    rows = []
    for dataset, strategy in PROTOCOLS:
        if dataset not in datasets:
            continue
        for name in baselines:
            start = time.perf_counter()
            report = evaluate_baseline(name, dataset, "test", split_strategy=strategy)
            total = time.perf_counter() - start
            rows.append({"dataset": dataset, "split": f"{strategy} / test", "baseline": name,
                         **{k: report[k] for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10", "mrr", "coverage@20", "n_users")},
                         "fit_s": report["fit_seconds"], "eval_s": round(total - report["fit_seconds"], 2)})
            logging.info("%s %s: R@20 %.4f N@20 %.4f", dataset, name, report["recall@20"], report["ndcg@20"])
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| dataset | split | baseline | Recall@20 | NDCG@20 | NDCG@10 | Recall@10 | MRR | coverage@20 | users | fit s | eval s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['split']} | {r['baseline']} | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} | "
                     f"{r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['mrr']:.4f} | {r['coverage@20']:.3f} | {r['n_users']} | "
                     f"{r['fit_s']:.1f} | {r['eval_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="tiktok,ml-100k")
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rows = run(args.datasets.split(","), args.baselines.split(","))
    print(markdown(rows))
    print(f"\nmachine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads (BPR-MF fits with 1)")
    if args.out:
        args.out.write_text(json.dumps(to_jsonable(rows), indent=2))


if __name__ == "__main__":
    main()
