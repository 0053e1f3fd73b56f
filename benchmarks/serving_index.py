"""Index figures for the serving retriever: build time, memory, recall@20 against exact search and
single-query latency (unfiltered, media-filtered, with seen-item exclusion), per index kind.

Usage:
    .venv/bin/python benchmarks/serving_index.py --items 1000000 --dim 64 --kinds hnsw,ivf --out artifacts/bench/index.json
    .venv/bin/python benchmarks/serving_index.py --run RUN_DIR   # a real run's item vectors (TikTok)
    .venv/bin/python benchmarks/serving_index.py --run RUN_DIR --queries-from users --kinds auto,ivf_sq8 --no-sweep

Queries are user-like: mean-pools of 5-30 items from 1-3 topics (clusters) of the catalogue, as the
mean-pool user tower makes from a coherent history; for a real run, of random items, or with
`--queries-from users` the run's own user vectors. The search knob of each index is calibrated at
build time (`serving.index`) on a *different* sample of users than the one measured here.
Kind `auto` is what the server would build (`plan_index`: size, width, memory available now).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import faiss
import numpy as np

from recsys.artifact import l2_normalise, load_run
from serving.index import AllowedItems, IndexConfig, ItemIndex
import sys as _sys
_sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "tests"))  # test support: sample runs, local server
from support.sample_runs import synthetic_catalogue, synthetic_histories


def user_like_queries(vectors: np.ndarray, labels: np.ndarray | None, n: int, seed: int = 1) -> np.ndarray:
    """Mean-pools of coherent histories (1-3 topics); random items when the topics are unknown."""
    rng = np.random.default_rng(seed)
    if labels is None:
        histories = [rng.integers(0, len(vectors), rng.integers(5, 31)) for _ in range(n)]
    else:
        histories = synthetic_histories(labels, n, seed)
    return l2_normalise(np.stack([vectors[h].mean(0) for h in histories]))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def sweep(index: ItemIndex, queries: np.ndarray, exact: np.ndarray) -> list[dict]:
    """Recall@20 and single-query latency as the search-time knob (efSearch / nprobe) grows."""
    if index.kind == "flat":
        return []
    name, values = ("efSearch", (48, 96, 128, 192, 256)) if index.kind == "hnsw" else ("nprobe", (4, 8, 16, 32, 64, 128))
    base, rows = index.search_params, []
    faiss.omp_set_num_threads(1)
    for value in values:
        index.search_params = {name: value}
        approx, _ = index.search_batch(queries, 20)
        samples = []
        for q in queries[:300]:
            started = time.perf_counter()
            index.search(q, 20)
            samples.append(time.perf_counter() - started)
        rows.append({name: value, "recall@20": round(float(np.mean([len(set(a) & set(e)) / 20 for a, e in zip(approx, exact)])), 4),
                     **percentiles(samples)})
    index.search_params = base
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return rows


def measure(kind: str, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, media_mask: np.ndarray,
            config: dict, tune: np.ndarray, do_sweep: bool = True, store: Path | None = None) -> dict:
    rss_before = rss_mb()
    index = ItemIndex(vectors, IndexConfig(kind=kind, **config), user_vectors=tune, store=store, mmap=False)
    report = index.describe()
    result = {"kind": index.kind, "asked": kind, "build_s": round(index.build_seconds, 2),
              "index_mb": round(index.plan.estimated_bytes / 2**20, 1) if index.index is not None else round(vectors.nbytes / 2**20, 1),
              "rss_growth_mb": round(rss_mb() - rss_before, 1), "plan_reason": report["reason"], "nlist": report["nlist"],
              "search_params": report["search_params"], "calibration_recall@20": report["recall_at_20"]}
    approx, _ = index.search_batch(queries, 20)
    result["recall@20"] = round(float(np.mean([len(set(a) & set(e)) / 20 for a, e in zip(approx, exact)])), 4)
    result["sweep"] = sweep(index, queries, exact) if do_sweep else []
    faiss.omp_set_num_threads(1)  # what the server does: one query per request
    allowed = AllowedItems(media_mask)
    rng = np.random.default_rng(2)
    for name, filt, n_exclude in (("unfiltered", None, 0), ("media_filter", allowed, 0), ("media+exclude30", allowed, 30)):
        samples = []
        for q in queries[:300]:
            exclude = rng.integers(0, len(vectors), n_exclude) if n_exclude else None
            started = time.perf_counter()
            ids, _ = index.search(q, 20, filt, exclude)
            samples.append(time.perf_counter() - started)
            assert len(ids) == 20
        result[f"query_{name}"] = percentiles(samples)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--run", type=Path, help="use this run's item vectors instead of a synthetic catalogue")
    parser.add_argument("--spread", type=float, default=0.35,
                        help="synthetic within-topic noise (0.35: tight topics; 1.0: topics overlap, harder for every index)")
    parser.add_argument("--kinds", default="flat,hnsw,ivf", help="comma list of auto, flat, hnsw, ivf, ivf_sq8, ivf_pq")
    parser.add_argument("--queries-from", choices=("items", "users"), default="items",
                        help="with --run: random-item mean-pools (items) or the run's user vectors (users)")
    parser.add_argument("--store", type=Path, help="build the index into this folder, as the server does "
                        "(RECSYS_SERVE_INDEX_DIR): a server started on the same run then reads it instead of building")
    parser.add_argument("--no-sweep", action="store_true", help="skip the knob sweep (large catalogues)")
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=80)
    parser.add_argument("--ef-search", type=int, default=None, help="default: calibrated")
    parser.add_argument("--nprobe", type=int, default=None, help="default: calibrated")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    started = time.perf_counter()
    if args.run:
        run = load_run(args.run, mmap=True)
        vectors, labels = run.item_vectors, None
        source = str(args.run)
    else:
        vectors, labels = synthetic_catalogue(args.items, args.dim, seed=0, spread=args.spread)
        source = f"synthetic clustered {args.items}x{args.dim}, spread {args.spread}"
    print(f"{source}: {vectors.shape} made in {time.perf_counter() - started:.1f}s", flush=True)
    if args.run and args.queries_from == "users":  # halves: one tunes the index, the other is measured
        half = len(run.user_vectors) // 2
        tune, queries = run.user_vectors[:half], np.ascontiguousarray(run.user_vectors[half:][: args.queries])
    else:
        queries = user_like_queries(vectors, labels, args.queries)
        tune = user_like_queries(vectors, labels, 300, seed=7)
    media_mask = np.random.default_rng(3).random(len(vectors)) < 0.33  # e.g. the items carrying text
    t = time.perf_counter()
    _, exact = faiss.knn(queries, vectors, 20, faiss.METRIC_INNER_PRODUCT)
    print(f"exact ground truth for {len(queries)} queries in {time.perf_counter() - t:.1f}s", flush=True)
    config = {"hnsw_m": args.hnsw_m, "hnsw_ef_construction": args.ef_construction, "hnsw_ef_search": args.ef_search,
              "ivf_nprobe": args.nprobe, "target_recall": args.target_recall, "build_threads": os.cpu_count() or 1}
    results = {"source": source, "n_items": len(vectors), "dim": int(vectors.shape[1]), "cpus": os.cpu_count(),
               "load_avg_at_start": os.getloadavg()[0], "config": config, "kinds": []}
    for kind in args.kinds.split(","):
        results["kinds"].append(measure(kind, vectors, queries, exact, media_mask, config, tune, not args.no_sweep, args.store))
        print(json.dumps(results["kinds"][-1]), flush=True)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["load_avg_at_end"] = os.getloadavg()[0]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
