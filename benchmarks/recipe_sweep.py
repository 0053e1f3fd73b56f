"""One-tower sweep of the built-in recipe's levers on an unseen dataset (choose on valid, report test).

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/recipe_sweep.py --dataset ml100k-sparse \\
        --seeds 0,1 --try "" --try "model.learn_temperature=false" --try "train.weight_decay=5e-3 loss.kind=full_softmax"

Each `--try` is a space-separated list of `--set` overrides on top of the recipe (no config file:
`recsys train --dataset artifacts/unseen/D --out runs/sweep-D-<slug>-s<seed> --set train.ensemble=1
--set train.threads=1 --set train.seed=SEED ...`). A finished run resumes instantly, so re-running
only trains what is missing. Rows (valid and test R@20/N@20/N@10, best epoch, wall) are cached in
`artifacts/generalisation/sweep-<dataset>.json` and printed as a Markdown table, with the
mean over seeds and, for every setting trained with seeds 0-2 (0-4), the three- (five-) member
ensemble those towers make (`train.ensemble=3` trains exactly these seeds and serves their concatenation;
recombined as `benchmarks/member_mix.py` does).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.generalisation_bench import DERIVATIONS, train_default  # noqa: E402
from benchmarks.unseen_dataset import build  # noqa: E402
from training.evaluation import to_jsonable  # noqa: E402

METRICS = ("recall@20", "ndcg@20", "ndcg@10")


def slug(overrides: str) -> str:
    return hashlib.sha1(overrides.encode()).hexdigest()[:8] if overrides else "recipe"


def mix(runs: list[Path]) -> dict[str, dict[str, float]]:
    """The ensemble of single-tower runs, as `train.ensemble=len(runs)` would serve it (member_mix.py)."""
    import numpy as np

    from recsys.metrics import per_user_ranking_metrics, summarise
    from recsys.models.ensemble import concat_members, member_weights
    from training.config import load_config
    from training.data import build_training_data
    from training.export import served_scorer

    data = build_training_data(load_config(runs[0] / "config.toml").data)
    w = member_weights([json.loads((r / "run.json").read_text())["temperature"] for r in runs])
    users = concat_members([np.load(r / "user_vectors.npy") for r in runs], w)
    items = concat_members([np.load(r / "item_vectors.npy") for r in runs], w)
    out = {}
    for split, held_out in (("valid", data.valid), ("test", data.test)):
        per_user, tops = per_user_ranking_metrics(served_scorer(data, users, items),
                                                  held_out, data.train, data.n_items)
        m = summarise(per_user, tops, data.n_items, (10, 20))
        out[split] = {k: float(m[k]) for k in METRICS}
        # Per-user spread: one figure's standard error is sd / sqrt(users) (what "SE" means in BENCHMARKS).
        out[split].update({f"sd {k}": float(per_user[k].std()) for k in ("ndcg@20", "ndcg@10")},
                          users=per_user.height)
    return out


def run_dir(dataset: str, overrides: str, members: int, seed: int) -> Path:
    return ROOT / "runs" / f"sweep-{dataset}-{slug(overrides)}-m{members}-s{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DERIVATIONS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--try", dest="tries", action="append", default=[], help="overrides, space-separated")
    parser.add_argument("--members", type=int, default=1)
    args = parser.parse_args()
    folder = ROOT / "artifacts" / "unseen" / args.dataset
    if not (folder / "interactions.csv").exists():
        build(folder, **DERIVATIONS[args.dataset])
    cache_path = ROOT / "artifacts" / "generalisation" / f"sweep-{args.dataset}.json"
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    for overrides in args.tries:
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{overrides} | m{args.members} | s{seed}"
            if key in cache:
                continue
            run = run_dir(args.dataset, overrides, args.members, seed)
            sets = overrides.split() + [f"train.ensemble={args.members}", f"train.seed={seed}"]
            wall, _ = train_default(folder, run, sets)
            metrics = json.loads((run / "metrics.json").read_text())
            cache[key] = {"overrides": overrides, "seed": seed, "members": args.members, "wall_s": wall,
                          "load": round(os.getloadavg()[1], 1), "best_epoch": metrics["best_epoch"],
                          "epochs_run": metrics["training"]["epochs_run"],
                          "valid": {k: metrics["valid"][k] for k in METRICS},
                          "test": {k: metrics["test"][k] for k in METRICS}}
            cache_path.write_text(json.dumps(to_jsonable(cache), indent=1))
            r = cache[key]
            print(f"{key}: valid N@20 {r['valid']['ndcg@20']:.4f} test N@20 {r['test']['ndcg@20']:.4f} "
                  f"epoch {r['best_epoch']} {wall:.0f}s", flush=True)
    print("| overrides | members | seed | valid R@20 | valid N@20 | valid N@10 | test R@20 | test N@20 | test N@10 | best epoch | wall s (load) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in cache.values():
        cells = [f"{r[s][k]:.4f}" for s in ("valid", "test") for k in METRICS]
        print(f"| `{r['overrides'] or '(recipe)'}` | {r['members']} | {r['seed']} | " + " | ".join(cells)
              + f" | {r['best_epoch']} | {r['wall_s']:.0f} ({r['load']}) |")
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in cache.values():
        groups.setdefault((r["overrides"], r["members"]), []).append(r)
    print("\nmean over seeds: overrides | members | seeds | valid N@20 | valid N@10 | test N@20 | test N@10")
    for (ov, m), rs in groups.items():
        mean = {f"{s} {k}": sum(r[s][k] for r in rs) / len(rs) for s in ("valid", "test") for k in ("ndcg@20", "ndcg@10")}
        print(f"| `{ov or '(recipe)'}` | {m} | {len(rs)} | " + " | ".join(f"{v:.4f}" for v in mean.values()) + " |")
    mix_path = cache_path.with_name(f"sweep-{args.dataset}-mix.json")
    mixes = json.loads(mix_path.read_text()) if mix_path.exists() else {}
    print("\nensembles of seeds 0..K-1 (K = 3, and 5 where trained): overrides | K | valid R@20 | valid N@20 | "
          "valid N@10 | test R@20 | test N@20 | test N@10")
    for (ov, m), rs in groups.items():
        seeds = {r["seed"] for r in rs}
        for k in (3, 5):
            if m != 1 or not set(range(k)) <= seeds:
                continue
            key = f"{ov} | mix{k}"
            if key not in mixes:
                mixes[key] = mix([run_dir(args.dataset, ov, 1, s) for s in range(k)])
                mix_path.write_text(json.dumps(to_jsonable(mixes), indent=1))
            r = mixes[key]
            print(f"| `{ov or '(recipe)'}` | {k} | "
                  + " | ".join(f"{r[s][k2]:.4f}" for s in ("valid", "test") for k2 in METRICS) + " |")

if __name__ == "__main__":
    main()
