"""Item tower figures: fusion/media ablation, cold start (TikTok + ML-100K item hold-out), cross-media alignment.

    RECSYS_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/item_tower_bench.py \\
        [--groups ablation,alignment,noise,ml100k] [--threads 1] [--fresh]

Every TikTok run is `training.run.train` on the predefined DiffMM split, seed 0, with the base
config (default `configs/tiktok.toml`, read **once** at start so every run shares it even if the
file changes meanwhile) plus one run's `--set`-style overrides; runs go to `runs/ablation-<name>/`
(each holds its resolved `config.toml`, so `recsys train --config runs/ablation-<name>/config.toml`
reproduces it). Each run is judged by the same harness as `recsys evaluate` (`evaluate_run`):
ranking on valid and test, `--task cold-start` and `--task cross-media` on test.

Groups:
- `ablation`: fusion weighted / concat_mlp / gated_attention, image only, audio only, ID only;
- `alignment`: `loss.alignment_weight` 0.05, 0.2, 1.0 (weighted fusion; 0 is the ablation's default);
- `noise`: the default config with seeds 1 and 2 (how much of a difference is seed noise);
- `extra`: seeds 1 and 2 of `alignment_weight=1.0` and of `gated_attention`, and `alignment_weight=3.0`;
- `ml100k`: ML-100K with 10% of items held out of train (`recsys.data.splits.cold_item_split`,
  seed 0; warm items leave-last-out), text medium (MiniLM vectors from the embed job), same base config.

Results: tables on stdout (Markdown, for BENCHMARKS.md), JSON in `artifacts/bench/item_tower.json`.
A finished run directory whose config matches is reused (its checkpoint resumes at the end); `--fresh`
retrains.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import shutil
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recsys.artifact import load_run
from recsys.data import load_dataset
from recsys.data.schema import Dataset
from recsys.data.splits import cold_item_split
from recsys.metrics import evaluate_scores
from training.config import TrainConfig, apply_overrides, default_config_path
from training.data import build_training_data
from training.evaluation import evaluate_run, to_jsonable
from training.evaluation_protocol import prepare_split
from training.evaluation_runs import align_run, aligned_score_fn
from training.run import train

log = logging.getLogger("item_tower_bench")
ROOT = Path(__file__).resolve().parents[1]
RANK_KEYS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")

ABLATION: list[tuple[str, list[str]]] = [
    ("weighted", []),
    ("concat_mlp", ["model.fusion=concat_mlp"]),
    ("gated_attention", ["model.fusion=gated_attention"]),
    ("image_only", ['data.media=["image"]']),
    ("audio_only", ['data.media=["audio"]']),
    # No content at all: nothing for dropped IDs or the content kNN graph to fall back on, so both are off.
    ("id_only", ["data.media=[]", "model.id_dropout=0.0", "model.item_knn=0"]),
]
ALIGNMENT: list[tuple[str, list[str]]] = [
    (f"align{w}", [f"loss.alignment_weight={w}"]) for w in (0.05, 0.2, 1.0)]
NOISE: list[tuple[str, list[str]]] = [(f"weighted_seed{s}", [f"train.seed={s}"]) for s in (1, 2)]
# Seed replicates of the two candidate changes to the default, and a stronger alignment.
EXTRA: list[tuple[str, list[str]]] = [
    *[(f"align1.0_seed{s}", ["loss.alignment_weight=1.0", f"train.seed={s}"]) for s in (1, 2)],
    ("align3.0", ["loss.alignment_weight=3.0"]),
    *[(f"gated_attention_seed{s}", ["model.fusion=gated_attention", f"train.seed={s}"]) for s in (1, 2)],
]
ML100K_OVERRIDES = ['data.dataset="ml-100k"', 'data.split="predefined"']
COLD_FRACTION, COLD_SEED = 0.1, 0


def make_config(base: dict[str, Any], overrides: list[str], threads: int) -> TrainConfig:
    raw = apply_overrides(copy.deepcopy(base), overrides + [f"train.threads={threads}"])
    return TrainConfig.model_validate(raw)


def finished(run_dir: Path, config: TrainConfig) -> bool:
    try:
        return load_run(run_dir).meta.get("config_fingerprint") == config.fingerprint()
    except Exception:  # no run there yet, or an unreadable one: train it
        return False


def train_run(name: str, config: TrainConfig, dataset: Dataset | None, fresh: bool) -> tuple[Path, float, bool]:
    run_dir = ROOT / "runs" / f"ablation-{name}"
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if finished(run_dir, config):
        log.info("%s: reusing %s", name, run_dir)
        return run_dir, float("nan"), True
    if run_dir.exists():  # a different config or a broken run: never mix checkpoints
        shutil.rmtree(run_dir)
    began = time.perf_counter()
    data = build_training_data(config.data, dataset=dataset) if dataset is not None else None
    train(config, run_dir, resume=True, progress=False, data=data)
    return run_dir, time.perf_counter() - began, False


def judge(run_dir: Path, dataset: Dataset | None, media: int) -> dict[str, Any]:
    """Everything `recsys evaluate --json` reports for this run, on the same harness."""
    out: dict[str, Any] = {}
    for split in ("valid", "test"):
        report = evaluate_run(run_dir, split, "ranking", dataset=dataset)
        out[split] = {k: report[k] for k in RANK_KEYS + ("n_users",)}
    out["cold_start"] = evaluate_run(run_dir, "test", "cold-start", dataset=dataset)
    if media >= 2:
        out["cross_media"] = evaluate_run(run_dir, "test", "cross-media", dataset=dataset)
    return out


def warm_test(run_dir: Path, dataset: Dataset) -> dict[str, Any]:
    """ML-100K hold-out: ranking on the warm (leave-last-out) test rows only, model vs most-popular."""
    ev = prepare_split(dataset, "test", "predefined")
    rows = ev.held_out.filter(~pl.col("cold_item"))
    score = aligned_score_fn(align_run(load_run(run_dir), ev.dataset), ev.popularity)
    model = evaluate_scores(score, rows, ev.train, ev.n_items)
    pop = evaluate_scores(lambda b: np.tile(ev.popularity, (len(b), 1)), rows, ev.train, ev.n_items)
    return {"n_interactions": rows.height, "model": {k: model[k] for k in RANK_KEYS},
            "most_popular": {k: pop[k] for k in RANK_KEYS}}


def command_for(dataset: str, name: str, overrides: list[str]) -> str:
    sets = " ".join(f"--set '{o}'" for o in overrides)
    return f"recsys train --dataset {dataset} --out runs/ablation-{name} {sets} --no-progress".replace("  ", " ")


def run_group(group: str, base: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    if group == "ml100k":
        ds = load_dataset("ml-100k")
        ds = replace(ds, interactions=cold_item_split(ds.interactions, COLD_FRACTION, COLD_SEED))
        variants, dataset = [("ml100k_cold10", ML100K_OVERRIDES)], ds
    else:
        variants = {"ablation": ABLATION, "alignment": ALIGNMENT, "noise": NOISE, "extra": EXTRA}[group]
        dataset = None
    for name, overrides in variants:
        if args.only and name not in args.only:
            continue
        config = make_config(base, overrides, args.threads)
        run_dir, seconds, reused = train_run(name, config, dataset, args.fresh)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        row: dict[str, Any] = {
            "group": group, "name": name, "overrides": overrides, "run_dir": str(run_dir.relative_to(ROOT)),
            "fingerprint": config.fingerprint(), "alignment_weight": config.loss.alignment_weight,
            "fusion": config.model.fusion, "config": config.model_dump(mode="json"), "train_seconds": None if reused else round(seconds, 1),
            "best_epoch": metrics["best_epoch"], "epochs_run": metrics["training"].get("epochs_run"),
            "mean_epoch_seconds": metrics["training"].get("mean_epoch_seconds"),
            "media": metrics["data"]["media"], "cold_items": metrics["data"]["cold_items"],
            "command": command_for(config.data.dataset, name, overrides) if group != "ml100k" else
            "benchmarks/item_tower_bench.py --groups ml100k (custom split, not reachable from the CLI)",
            **judge(run_dir, dataset, len(metrics["data"]["media"]))}
        if group == "ml100k":
            row["warm_test"] = warm_test(run_dir, dataset)
            row["split"] = {"kind": "cold_item_split", "fraction": COLD_FRACTION, "seed": COLD_SEED,
                            "warm": "leave-last-out", "cold interactions": "all in test"}
        rows.append(row)
        log.info("%s: test R@20 %.4f N@20 %.4f, cold R@20 %.4f (%s s)", name, row["test"]["recall@20"],
                 row["test"]["ndcg@20"], row["cold_start"].get("recall@20", float("nan")), row["train_seconds"])
    return rows


# --- tables -----------------------------------------------------------------------------------
def _f(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def ranking_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | overrides | valid R@20 | valid N@20 | test R@20 | test N@20 | cold R@20 (among cold) | best epoch | train s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        sets = " ".join(f"`{o}`" for o in r["overrides"]) or "(base)"
        lines.append(f"| {r['name']} | {sets} | {_f(r['valid']['recall@20'])} | {_f(r['valid']['ndcg@20'])} | "
                     f"{_f(r['test']['recall@20'])} | {_f(r['test']['ndcg@20'])} | {_f(r['cold_start'].get('recall@20'))} | "
                     f"{r['best_epoch']} | {_f(r['train_seconds'], 0)} |")
    return "\n".join(lines)


def cold_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | interactions | cold items | R@20 among cold | N@20 among cold | random = popularity R@20 | "
             "R@20 among all | popularity R@20 among all | random R@20 among all |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        c = r["cold_start"]
        a = c.get("all_items", {})
        lines.append(f"| {r['name']} | {c['n_interactions']} | {c['n_cold_items']} | {_f(c.get('recall@20'))} | "
                     f"{_f(c.get('ndcg@20'))} | {_f(c.get('random_recall@20'))} | {_f(a.get('recall@20'))} | "
                     f"{_f(a.get('popularity_recall@20'))} | {_f(a.get('random_recall@20'))} |")
    return "\n".join(lines)


def cross_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | alignment_weight | image→audio R@10 (held-out) | audio→image R@10 (held-out) | "
             "image→audio R@10 (all) | audio→image R@10 (all) | test R@20 | test N@20 | valid N@20 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    chance = None
    for r in rows:
        x = r.get("cross_media")
        if not x:
            continue
        chance = (x["chance@10"], x["chance@10_all_items"], x["n_held_out"], x["n_items"])
        lines.append(f"| {r['name']} | {r['alignment_weight']} | {_f(x['image_to_audio_recall@10'])} | "
                     f"{_f(x['audio_to_image_recall@10'])} | {_f(x['image_to_audio_recall@10_all_items'])} | "
                     f"{_f(x['audio_to_image_recall@10_all_items'])} | {_f(r['test']['recall@20'])} | "
                     f"{_f(r['test']['ndcg@20'])} | {_f(r['valid']['ndcg@20'])} |")
    if chance:
        lines.append(f"\nchance: {chance[0]:.4f} among the {chance[2]} held-out items, {chance[1]:.4f} among all {chance[3]}")
    return "\n".join(lines)


def seed_table(rows: list[dict[str, Any]]) -> str:
    """Mean ± sample sd over the seeds each TikTok config was run with (configs with >= 2 seeds)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["group"] == "ml100k":
            continue
        key = " ".join(o for o in r["overrides"] if not o.startswith("train.seed=")) or "(base)"
        groups.setdefault(key, []).append(r)
    cols = [("valid N@20", lambda r: r["valid"]["ndcg@20"]), ("test R@20", lambda r: r["test"]["recall@20"]),
            ("test N@20", lambda r: r["test"]["ndcg@20"]), ("cold R@20", lambda r: r["cold_start"].get("recall@20")),
            ("img→aud R@10", lambda r: (r.get("cross_media") or {}).get("image_to_audio_recall@10")),
            ("aud→img R@10", lambda r: (r.get("cross_media") or {}).get("audio_to_image_recall@10"))]
    lines = ["| config | seeds | " + " | ".join(c for c, _ in cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for key, rs in groups.items():
        if len(rs) < 2:
            continue
        cells = []
        for _, get in cols:
            vals = np.array([get(r) for r in rs if get(r) is not None], dtype=float)
            cells.append(f"{vals.mean():.4f} ± {vals.std(ddof=1):.4f}" if len(vals) > 1 else "–")
        seeds = ",".join(str(r["config"]["train"]["seed"]) for r in rs)
        lines.append(f"| {key} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="ablation,alignment,noise,extra,ml100k")
    parser.add_argument("--config", type=Path, default=default_config_path("tiktok"), help="base config (read once)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (does not change the config hash)")
    parser.add_argument("--only", type=lambda s: s.split(","), default=None, help="comma-separated run names")
    parser.add_argument("--fresh", action="store_true", help="retrain even when a matching run directory exists")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "item_tower.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    base = tomllib.loads(args.config.read_text())
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for group in [g.strip() for g in args.groups.split(",") if g.strip()]:
        rows += run_group(group, base, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() and not args.fresh else {}
    merged = {r["name"]: r for r in previous.get("runs", [])}
    for r in rows:  # a reused run keeps the training time measured when it was trained
        old = merged.get(r["name"], {})
        if r["train_seconds"] is None and old.get("fingerprint") == r["fingerprint"]:
            r["train_seconds"] = old.get("train_seconds")
        merged[r["name"]] = r
    rows = list(merged.values())  # tables cover every run so far (earlier invocations too)
    tiktok = [r for r in rows if r["group"] != "ml100k"]
    print("\n## Ranking (TikTok predefined split; ML-100K cold-item split)\n")
    print(ranking_table(rows))
    print("\n## Cold start (test, `--task cold-start`)\n")
    print(cold_table(rows))
    print("\n## Cross-media (test held-out items, `--task cross-media`)\n")
    print(cross_table(tiktok))
    for r in rows:
        if "warm_test" in r:
            w = r["warm_test"]
            print(f"\n{r['name']} warm test rows ({w['n_interactions']}): model R@20 {w['model']['recall@20']:.4f} "
                  f"N@20 {w['model']['ndcg@20']:.4f}; most-popular R@20 {w['most_popular']['recall@20']:.4f} "
                  f"N@20 {w['most_popular']['ndcg@20']:.4f}")
    print("\n## Seed spread (mean ± sd)\n")
    print(seed_table(rows))
    payload = {"base_config": str(args.config), "base": base, "threads": args.threads,
               "machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "cpus": torch.get_num_threads(), "platform": platform.platform()},
               "created_at": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.perf_counter() - began, 1),
               "runs": rows}
    args.out.write_text(json.dumps(to_jsonable(payload), indent=1))
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
