"""Live catalogue figures for BENCHMARKS.md, "Live catalogue".

Parts (run from the repository root; RECSYS_DATA_DIR must point at the shared data):

* ``index``: recall@20 of the live search (trained index + exact live overlay, minus tombstones)
  against exact search over everything, after adding 10 % new items, for an HNSW and a flat base
  index; plus the cost of one in-process upsert.
      .venv/bin/python benchmarks/live_catalogue.py index [--items 100000] [--dim 64]
* ``serving``: time-to-servable of `PUT /v1/items/{id}` (request sent -> the item is returned by
  `/v1/items/{twin}/similar`) on a real server (uvicorn, real Redis) while an open-loop generator
  sends ~200 feed requests/s.
      .venv/bin/python benchmarks/live_catalogue.py serving [--rate 200] [--items 100]
* ``tradeoff``: the new-item policy's trade-off on a trained run (TikTok natural cold items):
  new-item prior (boost) x exploration share -> all_items_recall@20 vs warm Recall@20.
      .venv/bin/python benchmarks/live_catalogue.py tradeoff --run runs/tiktok-default [--split valid]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # test support: sample runs, local server
BENCH = ROOT / "artifacts" / "bench"


def part_index(n_items: int, dim: int, seed: int = 0) -> dict:
    from serving.index import IndexConfig
    from serving.retriever import Retriever
    from recsys.artifact import l2_normalise
    from support.sample_runs import synthetic_run

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["RECSYS_STORE_DIR"] = str(Path(tmp) / "store")
        run = synthetic_run(Path(tmp) / "run", n_items=n_items, dim=dim, n_users=200, seed=seed)
        rng = np.random.default_rng(seed)
        base = np.load(Path(run) / "item_vectors.npy")
        # new items on the catalogue's topics: perturbed copies of random trained items
        new_vectors = l2_normalise(base[rng.choice(n_items, n_items // 10)]
                                   + 0.35 / np.sqrt(dim) * rng.standard_normal((n_items // 10, dim)).astype(np.float32))
        for kind in ("hnsw", "flat"):
            retriever = Retriever.load(run, IndexConfig(kind=kind))
            started = time.perf_counter()
            for j, vector in enumerate(new_vectors):
                retriever.live.put(f"new-{j}", vector, ["image"], None, "bench")
            put_ms = (time.perf_counter() - started) / len(new_vectors) * 1000
            deleted = rng.choice(n_items, n_items // 100, replace=False)  # and 1 % take-downs
            for index in deleted:
                retriever.live.delete(str(index))
            everything = np.concatenate([retriever.run.item_vectors, new_vectors])
            alive = np.ones(len(everything), bool)
            alive[deleted] = False
            queries = retriever.run.user_vectors[:200]
            hits, new_share = [], []
            search_ms = []
            for q in queries:
                t = time.perf_counter()
                got = retriever.search(q, 20).indexes
                search_ms.append((time.perf_counter() - t) * 1000)
                scores = everything @ q
                scores[~alive] = -np.inf
                exact = np.argsort(-scores)[:20]
                hits.append(len(set(got.tolist()) & set(exact.tolist())) / 20)
                new_share.append(float(np.mean(exact >= n_items)))
            out[kind] = {"items": n_items, "added": len(new_vectors), "taken_down": len(deleted), "dim": dim,
                         "recall@20_vs_exact": round(float(np.mean(hits)), 4),
                         "new_items_in_exact_top20": round(float(np.mean(new_share)), 4),
                         "put_ms_in_process": round(put_ms, 3), "search_p50_ms": round(float(np.median(search_ms)), 3)}
            print(kind, out[kind], flush=True)
    return out


def part_serving(rate: float, n_items: int, seconds_per_item: float = 0.5) -> dict:
    import httpx

    from recsys.data.registry import load_dataset
    from serving_loadgen import open_loop
    from support.catalogue_runs import tiktok_content_run
    from support.local_server import LocalServer

    BENCH.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="live-bench-"))
    run = tiktok_content_run(work / "run")
    ds = load_dataset("tiktok")
    key = "bench-live-catalogue-key-0123"
    env = {"RECSYS_STORE_DIR": str(work / "store"), "RECSYS_SERVE_LOG_DIR": str(work / "logs"),
           "RECSYS_SERVE_API_KEY": key, "RECSYS_REDIS_NAMESPACE": f"bench-live-{os.getpid()}", "HF_HUB_OFFLINE": "1"}
    rng = np.random.default_rng(0)
    users = [str(u) for u in rng.choice(9308, 5000)]
    duration = n_items * seconds_per_item + 20
    paths = [f"/v1/users/{users[i % len(users)]}/recommendations?k=20" for i in range(int(rate * duration))]
    with LocalServer(run, env=env, log_file=work / "server.log", startup_timeout_s=600) as server:
        load_result = {}

        def load() -> None:
            load_result["r"] = asyncio.run(open_loop("127.0.0.1", server.port, paths, rate, connections=32))

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(10)  # let the load settle
        servable, put_ms = [], []
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for j in range(n_items):
                twin = int(rng.integers(0, ds.n_items))
                features = {m: (np.asarray(ds.item_features[m][twin], np.float64)
                                + 0.02 * rng.standard_normal(128)).tolist() for m in ("image", "audio")}
                started = time.perf_counter()
                response = http.put(f"/v1/items/bench-{j}", json={"features": features}, headers={"X-API-Key": key})
                put_ms.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 201, response.text
                while True:
                    similar = http.get(f"/v1/items/bench-{j}/similar", params={"k": 5})
                    if similar.status_code == 200:
                        break
                servable.append((time.perf_counter() - started) * 1000)
                time.sleep(max(0.0, seconds_per_item - (time.perf_counter() - started)))
        loader.join()
    summary = load_result["r"].summary()
    result = {"feed_load": summary, "items": n_items,
              "time_to_servable_ms": {"p50": round(float(np.percentile(servable, 50)), 1),
                                      "p99": round(float(np.percentile(servable, 99)), 1),
                                      "max": round(float(np.max(servable)), 1)},
              "put_ms": {"p50": round(float(np.percentile(put_ms, 50)), 1), "p99": round(float(np.percentile(put_ms, 99)), 1)}}
    print(json.dumps(result, indent=2), flush=True)
    return result


def part_tradeoff(run_dir: Path, split: str, boosts: list[float], shares: list[float]) -> list[dict]:
    from recsys.artifact import load_run
    from recsys.new_items import NewItemPolicy
    from training.evaluation import _open
    from training.evaluation_cold_start import feed_policy_report
    from training.evaluation_runs import aligned_score_fn, align_run

    run, ev = _open(run_dir, split, None)
    score_fn = aligned_score_fn(align_run(run, ev.dataset), ev.popularity)
    rows = []
    for share in shares:
        for boost in boosts:
            report = feed_policy_report(score_fn, ev, NewItemPolicy(boost=boost, share=share))
            row = {"split": split, "boost": boost, "share": share, **{k: report[k] for k in (
                "all_items_recall@20", "random_all_items_recall@20", "warm_recall@20", "warm_recall@20_policy",
                "warm_relative_loss")}}
            row["x_random"] = round(row["all_items_recall@20"] / row["random_all_items_recall@20"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["index", "serving", "tradeoff"])
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--split", default="valid")
    parser.add_argument("--boosts", default="0,0.02,0.05,0.08,0.1,0.15,0.2")
    parser.add_argument("--shares", default="0,0.05,0.1")
    args = parser.parse_args()
    BENCH.mkdir(parents=True, exist_ok=True)
    if args.part == "index":
        result = part_index(args.items or 100_000, args.dim)
    elif args.part == "serving":
        result = part_serving(args.rate, args.items or 100)
    else:
        result = part_tradeoff(args.run, args.split, [float(x) for x in args.boosts.split(",")],
                               [float(x) for x in args.shares.split(",")])
    (BENCH / f"live_catalogue_{args.part}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
