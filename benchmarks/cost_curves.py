"""Cost curves of issue 19, one script: how serving, training and materialisation scale.

Parts (each writes JSON under --out, default artifacts/bench/cost/, and skips a point whose JSON
is already there unless --force; `plot` draws every curve whose points exist into docs/):

  feed         feed latency (misses and hits at --rate req/s, open loop) and server memory vs
               catalogue size: `benchmarks/serving_load.py --synthetic N` per N (a real `recsys
               serve` subprocess, real Redis), with the index `auto` chose and its measured recall.
  train        training step time vs catalogue size: `benchmarks/training_step_bench.py` (full
               and sampled step).
  materialise  materialisation time and peak memory vs interactions: `materialize()` on a
               synthetic dataset of N interactions (N / 100 users, 100k items, Zipf items,
               timestamps over a year), each N in its own process (peak RSS is that job's),
               Parquet offline tables + a private embedded Redis; above 2M interactions the job
               streams in user buckets of 500k interactions (`write_offline_streaming`).
  materialise_probe --n 100000000: the 100M job cut to its first --probe-buckets user buckets
               (full dataset in memory): memory and seconds per bucket, when a full run does not
               fit the time available.
  plot         docs/cost_feed.png, docs/cost_training_step.png, docs/cost_materialise.png.

Usage:
    .venv/bin/python benchmarks/cost_curves.py feed --sizes 10000 100000 1000000 10000000
    .venv/bin/python benchmarks/cost_curves.py train
    .venv/bin/python benchmarks/cost_curves.py materialise --interactions 1000000 10000000 100000000
    .venv/bin/python benchmarks/cost_curves.py plot
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's packages, wherever the venv points


def feed(sizes: list[int], out: Path, rate: float, duration: float, force: bool) -> None:
    index_dir = out / "index"  # built once per catalogue, reused by later runs (same fingerprint)
    for n in sizes:
        target = out / f"feed-{n}.json"
        if target.exists() and not force:
            print(f"feed {n}: kept {target}")
            continue
        started = time.time()
        subprocess.run([PYTHON, str(REPO / "benchmarks" / "serving_load.py"), "--synthetic", str(n), "--rate", str(rate),
                        "--duration", str(duration), "--out", str(target)], check=True, cwd=REPO,
                       env={**_env(), "RECSYS_SERVE_INDEX_DIR": str(index_dir)})
        report = json.loads(target.read_text())
        report["wall_s"] = round(time.time() - started, 1)
        target.write_text(json.dumps(report, indent=2))
        print(f"feed {n}: misses p99 {report['misses']['p99_ms']} ms, server RSS {report['server_memory_mb']['rss']} MB, "
              f"index {report['index']['kind']} {report['index']['search_params']}", flush=True)


def train(out: Path, force: bool) -> None:
    target = out / "train.jsonl"
    if target.exists() and not force:
        print(f"train: kept {target}")
        return
    target.unlink(missing_ok=True)
    subprocess.run([PYTHON, str(REPO / "benchmarks" / "training_step_bench.py"), "--items", "10000", "100000", "1000000",
                    "--steps", "3", "--threads", "1", "--out", str(target)], check=True, cwd=REPO, env=_env())


def synthetic_interactions(n: int, seed: int = 0):
    """A dataset of n interactions: n / 100 users, 100k items (Zipf 1.3), timestamps over a year."""
    import numpy as np  # noqa: PLC0415
    import polars as pl  # noqa: PLC0415

    from recsys.data import Dataset  # noqa: PLC0415

    n_users, n_items = max(1, n // 100), 100_000
    rng = np.random.default_rng(seed)
    chunks = []
    for start in range(0, n, 10_000_000):  # chunks: no full-size int64 temporaries beside the frame
        m = min(n, start + 10_000_000) - start
        item_index = ((rng.zipf(1.3, m) - 1) % n_items).astype(np.int32)
        user_index = rng.integers(0, n_users, m, dtype=np.int32)
        chunks.append(pl.DataFrame({
            "user_id": pl.Series(user_index).cast(pl.String), "item_id": pl.Series(item_index).cast(pl.String),
            "user_index": pl.Series(user_index), "item_index": pl.Series(item_index),
            "timestamp": pl.Series(1_700_000_000 + rng.integers(0, 365 * 24 * 3600, m), dtype=pl.Int64),
            "event_type": pl.repeat("view", m, eager=True), "weight": pl.Series(np.ones(m, dtype=np.float32))}))
    interactions = pl.concat(chunks, rechunk=True)
    del chunks
    items = pl.DataFrame({
        "item_id": pl.Series(np.arange(n_items)).cast(pl.String), "item_index": pl.Series(np.arange(n_items), dtype=pl.Int32),
        "media": [["text"]] * n_items, "title": [f"item {i}" for i in range(n_items)],
        "text": [f"synthetic item {i}" for i in range(n_items)],
    }).with_columns(pl.lit(None, pl.String).alias("image_uri"), pl.lit(None, pl.String).alias("audio_uri"))
    return Dataset(name=f"synthetic-{n}", items=items, interactions=interactions)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def materialise_case(n: int, history_cap: int, stream_rows: int, bucket_rows: int, store_root: Path | None) -> dict:
    """One materialisation job in this process (run by `materialise` in a subprocess per n)."""
    import logging  # noqa: PLC0415

    from feature_store.materialize import materialize  # noqa: PLC0415
    from feature_store.redis_server import start_embedded_redis  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)  # bucket progress

    started = time.perf_counter()
    dataset = synthetic_interactions(n)
    version = dataset.version
    generate_s = time.perf_counter() - started
    rss_dataset = rss_mb()
    with tempfile.TemporaryDirectory(prefix="cost-materialise-", dir=store_root) as tmp:
        client = start_embedded_redis(Path(tmp) / "redis", persist=False)
        cpu = time.process_time()
        report = materialize(dataset, history_cap=history_cap, client=client, namespace=f"cost-{os.getpid()}",
                             offline_root=Path(tmp) / "offline", progress=False, stream_rows=stream_rows,
                             bucket_rows=bucket_rows)
        cpu = time.process_time() - cpu
        parquet_mb = sum(p.stat().st_size for p in report.offline_tables.values()) / 2**20
        redis_mb = client.info("memory")["used_memory"] / 2**20
        client.shutdown(nosave=True) if hasattr(client, "shutdown") else None
    return {"interactions": n, "users": report.online.users, "items": report.online.items, "history_cap": history_cap,
            "dataset_version": version, "streamed": n > stream_rows, "stream_rows": stream_rows,
            "bucket_rows": bucket_rows if n > stream_rows else None,
            "generate_s": round(generate_s, 1), "seconds": {k: round(v, 1) for k, v in report.seconds.items()},
            "materialise_s": round(report.total_seconds - report.seconds["load"], 1), "job_cpu_s": round(cpu, 1),
            "rss_after_dataset_mb": round(rss_dataset), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "parquet_mb": round(parquet_mb, 1), "redis_used_memory_mb": round(redis_mb, 1), "cpus": os.cpu_count()}


def materialise_probe(n: int, history_cap: int, bucket_rows: int, n_buckets: int, store_root: Path | None) -> dict:
    """A 100M-scale job cut short: the whole dataset in memory, the streamed offline write over its
    first `n_buckets` user buckets only (each bucket still filters the full frame). Measures what a
    full run needs, memory (dataset + one bucket) and seconds per bucket, when there is no time to
    run all of them; no online publish."""
    import dataclasses  # noqa: PLC0415
    import logging  # noqa: PLC0415

    import polars as pl  # noqa: PLC0415

    from feature_store.definitions import feature_inputs  # noqa: PLC0415
    from feature_store.materialize import user_buckets, write_offline_streaming  # noqa: PLC0415
    from feature_store.offline import OfflineStore  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    started = time.perf_counter()
    dataset = synthetic_interactions(n)
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    version = dataset.version
    version_s = time.perf_counter() - started
    rss_dataset = rss_mb()
    inputs = feature_inputs(dataset, history_cap)
    started = time.perf_counter()
    buckets = user_buckets(inputs.interactions, bucket_rows)
    buckets_s = time.perf_counter() - started
    first, last = buckets[0][0], buckets[n_buckets - 1][1]
    part = dataclasses.replace(inputs, interactions=inputs.interactions.filter(
        pl.col("user_id").is_between(pl.lit(first), pl.lit(last))))
    with tempfile.TemporaryDirectory(prefix="cost-probe-", dir=store_root) as tmp:
        seconds: dict[str, float] = {}
        started, cpu = time.perf_counter(), time.process_time()
        tables, latest, _ = write_offline_streaming(part, OfflineStore(dataset.name, version, Path(tmp)), bucket_rows, seconds)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        parquet_mb = sum(p.stat().st_size for p in tables.values()) / 2**20
    done_rows = latest["hist_count"].sum()
    return {"interactions": n, "probe_buckets": n_buckets, "total_buckets": len(buckets), "bucket_rows": bucket_rows,
            "probe_interactions": int(done_rows), "generate_s": round(generate_s, 1), "version_hash_s": round(version_s, 1),
            "user_buckets_s": round(buckets_s, 1), "probe_wall_s": round(wall, 1), "probe_cpu_s": round(cpu, 1),
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "extrapolated_wall_s": round(wall * len(buckets) / n_buckets), "extrapolated_cpu_s": round(cpu * len(buckets) / n_buckets),
            "rss_after_dataset_mb": round(rss_dataset),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "parquet_mb_probe": round(parquet_mb, 1), "cpus": os.cpu_count()}


def materialise(sizes: list[int], out: Path, history_cap: int, stream_rows: int, bucket_rows: int,
                store_root: Path | None, force: bool) -> None:
    for n in sizes:
        target = out / f"materialise-{n}.json"
        if target.exists() and not force:
            print(f"materialise {n}: kept {target}")
            continue
        load_before = os.getloadavg()[0]
        log_file = out / f"materialise-{n}.log"  # the job's progress (one line per user bucket)
        with open(log_file, "w") as log:
            done = subprocess.run([PYTHON, __file__, "_materialise_case", "--n", str(n), "--history-cap", str(history_cap),
                                   "--stream-rows", str(stream_rows), "--bucket-rows", str(bucket_rows)]
                                  + (["--store-root", str(store_root)] if store_root else []),
                                  cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=log, text=True)
        if done.returncode != 0:
            raise SystemExit(f"materialise {n} failed (exit {done.returncode}); see {log_file}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(load_avg_before=load_before, load_avg_after=os.getloadavg()[0])
        target.write_text(json.dumps(result, indent=2))
        print(f"materialise {n}: {result['materialise_s']} s, peak RSS {result['peak_rss_mb']} MB", flush=True)


def plot(out: Path, docs: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    docs.mkdir(parents=True, exist_ok=True)
    feeds = sorted((json.loads(p.read_text()) for p in out.glob("feed-*.json")), key=lambda r: r["model"]["n_items"])
    if feeds:
        n = [r["model"]["n_items"] for r in feeds]
        fig, (lat, cpu, mem) = plt.subplots(1, 3, figsize=(14, 4))
        for phase, style in (("misses", "o-"), ("hits", "s--")):
            lat.plot(n, [r[phase]["p50_ms"] for r in feeds], style, label=f"{phase} p50")
            lat.plot(n, [r[phase]["p99_ms"] for r in feeds], style, alpha=0.5, label=f"{phase} p99")
            cpu.plot(n, [r[phase].get("server_cpu_ms_per_request", float("nan")) for r in feeds], style, label=phase)
        loads = ", ".join(f"{r['load_avg_1m_before']:.0f}" for r in feeds)
        lat.set(xscale="log", yscale="log", xlabel="catalogue items (64-d)", ylabel="ms",
                title=f"feed latency, open loop {feeds[0]['rate']:.0f} req/s\n(load average {loads} on 2 cores)")
        lat.legend(fontsize=8)
        cpu.set_ylim(bottom=0)
        cpu.set(xscale="log", xlabel="catalogue items (64-d)", ylabel="server CPU ms per request",
                title="server CPU per request")
        cpu.legend(fontsize=8)
        mem.plot(n, [r["server_memory_mb"]["rss"] for r in feeds], "o-", label="server RSS")
        mem.plot(n, [r["server_memory_mb"]["uss"] for r in feeds], "s--", label="server USS")
        for x, r in zip(n, feeds):
            mem.annotate(f"{r['index']['kind']} {r['index']['search_params'] or ''}", (x, r["server_memory_mb"]["rss"]), fontsize=7)
        mem.set(xscale="log", yscale="log", xlabel="catalogue items (64-d)", ylabel="MB", title="server memory (after the load)")
        mem.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(docs / "cost_feed.png", dpi=110)
        print("wrote", docs / "cost_feed.png")
    train_file = out / "train.jsonl"
    if train_file.exists():  # training_step_bench's own plot of its JSON lines
        sys.path.insert(0, str(REPO / "benchmarks"))
        from training_step_bench import plot as plot_steps  # noqa: PLC0415

        plot_steps([json.loads(line) for line in train_file.read_text().splitlines() if line.strip()],
                   docs / "cost_training_step.png")
        print("wrote", docs / "cost_training_step.png")
    mats = sorted((json.loads(p.read_text()) for p in out.glob("materialise-*.json") if "probe" not in p.name),
                  key=lambda r: r["interactions"])
    probes = [json.loads(p.read_text()) for p in out.glob("materialise-probe-*.json")]
    if mats:
        n = [r["interactions"] for r in mats]
        fig, (t, m) = plt.subplots(1, 2, figsize=(10, 4))
        t.plot(n, [r["materialise_s"] for r in mats], "o-", label="wall")
        t.plot(n, [r["job_cpu_s"] for r in mats], "s--", label="job CPU")
        for r in probes:  # a run cut to its first buckets: wall and CPU extrapolated to all of them
            t.plot([r["interactions"]], [r["extrapolated_wall_s"]], "o", mfc="none", color="C0", label="wall, extrapolated")
            t.plot([r["interactions"]], [r["extrapolated_cpu_s"]], "s", mfc="none", color="C1", label="CPU, extrapolated")
            m.plot([r["interactions"]], [r["rss_after_dataset_mb"]], "s", mfc="none", color="C1",
                   label="dataset RSS (100M probe)")
        loads = [r[key] for r in mats for key in ("load_avg_before", "load_avg_after") if key in r]
        t.set(xscale="log", yscale="log", xlabel="interactions", ylabel="s",
              title=f"materialisation time (load average {min(loads):.0f}-{max(loads):.0f})" if loads
              else "materialisation time")
        t.legend()
        m.plot(n, [r["peak_rss_mb"] for r in mats], "o-", label="peak RSS (job)")
        m.plot(n, [r["rss_after_dataset_mb"] for r in mats], "s--", label="RSS of the loaded dataset")
        m.set(xscale="log", yscale="log", xlabel="interactions", ylabel="MB", title="materialisation memory")
        m.legend()
        fig.tight_layout()
        fig.savefig(docs / "cost_materialise.png", dpi=110)
        print("wrote", docs / "cost_materialise.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("feed", "train", "materialise", "materialise_probe", "plot", "_materialise_case"))
    parser.add_argument("--probe-buckets", type=int, default=4, help="materialise_probe: user buckets to run")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench" / "cost")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000])
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--interactions", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    parser.add_argument("--history-cap", type=int, default=50)
    parser.add_argument("--stream-rows", type=int, default=2_000_000, help="stream above this many interactions")
    parser.add_argument("--bucket-rows", type=int, default=500_000, help="interactions per user bucket when streaming")
    parser.add_argument("--store-root", type=Path, help="where the materialisation job writes (default: the temp dir)")
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--force", action="store_true", help="re-measure points whose JSON exists")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "_materialise_case":
        print(json.dumps(materialise_case(args.n, args.history_cap, args.stream_rows, args.bucket_rows, args.store_root)))
    elif args.part == "materialise_probe":  # one size (--n), in this process: peak RSS is the probe's
        load_before = os.getloadavg()[0]
        result = materialise_probe(args.n, args.history_cap, args.bucket_rows, args.probe_buckets, args.store_root)
        result.update(load_avg_before=load_before, load_avg_after=os.getloadavg()[0])
        (args.out / f"materialise-probe-{args.n}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    elif args.part == "feed":
        feed(args.sizes, args.out, args.rate, args.duration, args.force)
    elif args.part == "train":
        train(args.out, args.force)
    elif args.part == "materialise":
        materialise(args.interactions, args.out, args.history_cap, args.stream_rows, args.bucket_rows, args.store_root,
                    args.force)
    else:
        plot(args.out, args.docs)


if __name__ == "__main__":
    main()
