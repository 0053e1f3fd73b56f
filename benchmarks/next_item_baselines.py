"""Baselines of a next-item (leave-last-out) dataset on `valid` and `test` from one fit each.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/next_item_baselines.py \
        --dataset artifacts/unseen/ml100k-sparse-next [--baselines most-popular,itemknn,lightgcn,sasrec]

Same harness as `recsys evaluate --baseline NAME --dataset D --split valid|test` (every baseline is
fitted on train only and chooses its epoch on valid, if it learns), but each baseline is fitted
once and both splits are ranked from that fit (train is the same for both), which halves the cost
of the learned ones. Prints one JSON line per baseline: N@10/N@20/R@10/R@20 on valid and test,
fit seconds and the load average at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import training.content_baseline  # noqa: F401  (registers the content-only baseline)
from recsys.baselines import make_baseline
from recsys.data import load_dataset
from training.evaluation_protocol import prepare_split
from training.evaluation_ranking import ranking_report

KEYS = ("ndcg@10", "ndcg@20", "recall@10", "recall@20")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--baselines", default="most-popular,itemknn,lightgcn,sasrec")
    args = parser.parse_args()
    ds = load_dataset(args.dataset)
    valid, test = prepare_split(ds, "valid"), prepare_split(ds, "test")
    for name in args.baselines.split(","):
        model = make_baseline(name, dataset=ds.name)
        start = time.perf_counter()
        model.fit(valid.dataset, valid.train)
        fit = time.perf_counter() - start
        row = {"dataset": ds.name, "baseline": name, "fit_seconds": round(fit, 1),
               "load_average": [round(x, 1) for x in os.getloadavg()]}
        for label, ev in (("valid", valid), ("test", test)):
            report = ranking_report(model.score, ev)
            row.update({f"{label} {k}": round(float(report[k]), 4) for k in KEYS})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
