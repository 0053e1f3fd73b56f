"""Do served clicks warm cold items in the next run? Items without train interactions, before and after folding
the clicks of half their users into training (`training.served_events_fold`).

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/served_events_warmup.py [--dataset tiktok] \\
        [--set train.ensemble=1 ...] [--out runs/warmup]

Why: a live item is cold until users click it, and the clicks only help if the next run trains on them. On the
TikTok split, 7 % of test interactions are with items that have no train interaction; the default ranks them at
Recall@20 ~.036 (content + the new-item prior). Here the test interactions with those items are split by user:
one half becomes served events (written as the server's flusher writes them, into the offline store the run
reads), the other half is what is measured. Run A trains without events, run B with them (same config, same
seed); both are ranked with their served scores (`training.export.served_scorer`, new-item prior included),
the users' train items (plus, for B, their folded events) masked. Also reported: the whole test split minus the
served half, so a gain on the cold items is not paid for elsewhere.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from feature_store.served_events import SCHEMA, events_folder  # noqa: E402
from recsys.artifact import load_run  # noqa: E402
from recsys.data import load_dataset  # noqa: E402
from recsys.data.splits import apply_split  # noqa: E402
from recsys.metrics import per_user_ranking_metrics  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import build_training_data  # noqa: E402
from training.export import served_scorer  # noqa: E402
from training.run import train  # noqa: E402
from training.served_events_fold import dataset_reference  # noqa: E402


def write_events(folder: Path, rows: pl.DataFrame) -> None:
    """The served half as one Parquet part of the offline store's `serving_events` table."""
    now = time.time()
    folder.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame([{"event_id": f"warmup-{k}", "user_id": u, "item_id": i, "event_type": "click",
                           "ts": now + k, "received_at": now + k, "model_version": "warmup",
                           "stream_id": f"{int(now * 1000)}-{k}"}
                          for k, (u, i) in enumerate(zip(rows["user_id"], rows["item_id"]))], schema=SCHEMA)
    frame.write_parquet(folder / f"part-{int(now * 1000)}-0-warmup.parquet")


def run_scorer(run_dir: Path, config, new_below: int = 1):
    """(the run's served score function, its training data): built once per run, shared by every measured set.

    `new_below` > 1 (a prototype): items with fewer train interactions are scored as new items, with their
    content vector and the new-item prior."""
    from recsys.metrics import dot_product_scorer
    from recsys.models.content_projection import load_content_path
    from recsys.new_items import NewItemPolicy

    data = build_training_data(config.data)
    run = load_run(run_dir)
    items = np.asarray(run.item_vectors)
    if new_below <= 1:
        return served_scorer(data, np.asarray(run.user_vectors), items), data
    content = load_content_path(run_dir).embed_items(
        {m: np.asarray(f, np.float32) for m, f in data.content.features.items()},
        {m: np.asarray(k, bool) for m, k in data.content.masks.items()})
    low = data.item_counts.numpy() < new_below
    items = np.where(low[:, None], content, items).astype(np.float32)
    return dot_product_scorer(np.asarray(run.user_vectors), items,
                              np.where(low, np.float32(NewItemPolicy().boost), np.float32(0))), data


def measure(scorer, data, held: pl.DataFrame) -> dict[str, float]:
    """Recall@20 / NDCG@20 of `held` with `scorer`, the run's own train rows masked."""
    frame, _ = per_user_ranking_metrics(scorer, held, data.train, data.n_items, ks=(20,))
    ranks = []  # each held item's rank among the user's candidates (train items masked): robust on few rows
    if held.height <= 1000:
        for user, item in zip(held["user_index"].to_list(), held["item_index"].to_list()):
            scores = scorer(np.array([user]))[0]
            scores[data.train.filter(pl.col("user_index") == user)["item_index"].to_numpy()] = -np.inf
            ranks.append(int((scores > scores[item]).sum()) + 1)
    return {"recall@20": float(frame["recall@20"].mean()), "ndcg@20": float(frame["ndcg@20"].mean()),
            "median_rank": float(np.median(ranks)) if ranks else None, "users": frame.height,
            "interactions": held.height}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "warmup")
    parser.add_argument("--seed", type=int, default=0, help="which users' clicks are served")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--new-below", type=int, default=1, help="prototype: score items with fewer train "
                        "interactions as new items (content vector + new-item prior); 1 = the served rule")
    args = parser.parse_args()
    ds = load_dataset(args.dataset)
    split = apply_split(ds)
    train_rows, test = split.split("train"), split.split("test")
    cold_items = np.setdiff1d(test["item_index"].unique().to_numpy(), train_rows["item_index"].unique().to_numpy())
    cold_test = test.filter(pl.col("item_index").is_in(cold_items.tolist()))
    users = cold_test["user_index"].unique().sort().to_numpy()
    served_users = np.random.default_rng(args.seed).permutation(users)[:len(users) // 2]
    served = cold_test.filter(pl.col("user_index").is_in(served_users.tolist()))
    measured = cold_test.filter(~pl.col("user_index").is_in(served_users.tolist()))
    rest = test.join(served.select("user_index", "item_index"), on=["user_index", "item_index"], how="anti")
    clicked = measured.filter(pl.col("item_index").is_in(served["item_index"].unique().implode()))
    print(f"{args.dataset}: {len(cold_items)} test items without train interactions, {cold_test.height} test "
          f"interactions with them by {len(users)} users; served: {served.height} (by {len(served_users)} users), "
          f"measured: {measured.height}, {clicked.height} of them on items with served clicks", flush=True)
    results = {}
    for name, with_events in (("without", False), ("with", True)):
        store = args.out / f"store-{name}"
        config = load_config(None, args.dataset, ["train.threads=1", f"data.content_store={store}",
                                                  f"data.served_events={str(with_events).lower()}", *args.overrides])
        if with_events and not (store / "offline").exists():
            write_events(events_folder(store / "offline", dataset_reference(args.dataset, ds), ds.version), served)
        began = time.perf_counter()
        run_dir = train(config, args.out / f"run-{name}", resume=True, progress=False).run_dir
        scorer, data = run_scorer(run_dir, config, args.new_below)
        results[name] = {"cold items (measured half)": measure(scorer, data, measured),
                         "of which items with served clicks": measure(scorer, data, clicked),
                         "test minus the served half": measure(scorer, data, rest),
                         "seconds": round(time.perf_counter() - began, 1)}
        print(name, "served events:", json.dumps(results[name]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
