"""What the feed served reaches the next training run (`feature_store.served_events`,
`training.served_events_fold`): accepted events, as the server's flusher writes them to the offline store, are
folded into the train interactions after the live-catalogue log, so clicks make an item added live warm; the
run records the folded prefix and `recsys evaluate` folds exactly that prefix, or refuses."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from training_slices import write_test_config, write_tiktok_slice

pytestmark = pytest.mark.slow
OVERRIDES = ["model.item_knn=0", "model.propagation_layers=0", "train.epochs=2"]


@pytest.fixture
def store(tmp_path, isolated_settings):
    """This test's RECSYS_STORE_DIR (conftest's `isolated_settings`)."""
    return tmp_path / "store"


def write_part(folder: Path, name: str, rows: list[tuple[str, str, str, float]]) -> None:
    """A Parquet part as `serving.event_archive`'s flusher writes one: (event_id, user_id, item_id, ts)."""
    from feature_store.served_events import SCHEMA

    folder.mkdir(parents=True, exist_ok=True)
    stream = int(name)
    pl.DataFrame([{"event_id": e, "user_id": u, "item_id": i, "event_type": "click", "ts": ts, "received_at": ts,
                   "model_version": "m", "stream_id": f"{stream}-{k}"} for k, (e, u, i, ts) in enumerate(rows)],
                 schema=SCHEMA).write_parquet(folder / f"part-{stream}-0-test.parquet")


def test_folded_events_are_train_rows_after_the_dataset_with_new_users_and_unknown_items_counted(tmp_path, store):
    from recsys.data import load_dataset
    from feature_store.served_events import events_folder, fold_served_events, read_events_folder
    from recsys.data.splits import apply_split

    ds = load_dataset(str(write_tiktok_slice(tmp_path / "slice", every=16)))
    folder = tmp_path / "events"
    write_part(folder, "1000", [("e1", "0", "5", 1.7e9), ("e2", "newcomer", "5", 1.7e9 + 1), ("e3", "0", "ghost", 5.0)])
    write_part(folder, "2000", [("e1", "0", "5", 1.7e9), ("e4", "newcomer", "7", 3.0)])  # e1 again: at least once
    events = read_events_folder(folder)
    assert events["event_id"].to_list() == ["e1", "e2", "e3", "e4"]
    folded, fold = fold_served_events(ds, events, str(folder))
    assert (fold.events, fold.interactions, fold.new_users, fold.skipped_unknown_items) == (4, 3, 1, 1)
    assert "ghost" in fold.summary()
    added = folded.interactions.tail(3)
    assert added["split"].to_list() == ["train"] * 3  # a predefined split: train rows
    user0 = ds.interactions.filter(pl.col("user_id") == "0")["user_index"][0]
    assert added["user_index"].to_list() == [user0, ds.n_users, ds.n_users]  # the newcomer: the next index
    times = added["timestamp"].to_list()
    assert times[0] > ds.interactions["timestamp"].max() and times == sorted(times)  # after the dataset, in order
    assert folded.n_users == ds.n_users + 1 and folded.n_items == ds.n_items
    # a time-ordered split holds the newest events out: user 0's served click is its test event
    split = apply_split(folded.__class__(**{**folded.__dict__, "interactions": folded.interactions.drop("split")}),
                        "leave-last-out")
    user0 = split.interactions.filter(pl.col("user_id") == "0").sort("timestamp")
    assert user0["item_id"][-1] == "5" and user0["timestamp"][-1] == times[0] and user0["split"][-1] == "test"
    assert events_folder(tmp_path, "a", "v") == tmp_path / "a" / "v" / "serving_events"
    # a folder dataset (named by its absolute path) is filed inside the store, never inside the dataset's folder
    inside = events_folder(tmp_path / "offline", str(tmp_path / "shop"), "v")
    assert inside.is_relative_to(tmp_path / "offline") and inside.parent.parent.name.startswith("shop-")


def test_clicks_on_a_live_item_make_it_warm_in_the_next_run_and_evaluation_folds_the_same_events(tmp_path, store):
    from commands.main import app
    from feature_store.catalogue_log import CatalogueLog
    from feature_store.served_events import events_folder
    from recsys.artifact import load_run
    from recsys.data import load_dataset
    from training.config import load_config
    from training.data import build_training_data
    from training.run import train
    from training.served_events_fold import dataset_reference

    folder = write_tiktok_slice(tmp_path / "slice")
    config = load_config(write_test_config(tmp_path / "test.toml"), str(folder), [*OVERRIDES, "data.served_events=true"])
    ds = load_dataset(str(folder))
    CatalogueLog.open(store, "slice").append({"op": "put", "item_id": "live-1", "ts": 1.0, "media": ["image"],
                                              "features": {"image": {"precomputed-d128": [0.1] * 128}}})
    before = build_training_data(config.data)
    live = before.dataset.item_ids.index("live-1")
    assert int(before.item_counts[live]) == 0  # added live, never clicked: cold
    # what the server filed: the run's dataset reference and the dataset's own version
    events = events_folder(store / "offline", dataset_reference(str(folder), ds), ds.version)
    write_part(events, "1000", [(f"c{u}", str(u), "live-1", 1.7e9 + u) for u in range(6)]
               + [("n1", "newcomer", "live-1", 1.7e9 + 10)])
    off = load_config(write_test_config(tmp_path / "test.toml"), str(folder), OVERRIDES)
    assert build_training_data(off.data).served_events is None  # opt-in: `data.served_events` is off by default
    result = train(config, tmp_path / "run", resume=False, progress=False)
    data = build_training_data(config.data)
    assert int(data.item_counts[data.dataset.item_ids.index("live-1")]) == 7  # warm: trained on its clicks
    assert data.served_events is not None and data.served_events.new_users == 1
    run = load_run(result.run_dir)
    assert run.meta["served_events"]["events"] == 7 and run.meta["served_events"]["interactions"] == 7
    assert "newcomer" in run.users["user_id"].to_list()

    def evaluate() -> tuple[int, str]:
        out = CliRunner().invoke(app, ["evaluate", "--run", str(result.run_dir), "--split", "test", "--json"])
        return out.exit_code, out.stdout + (str(out.exception) if out.exception else "")

    code, text = evaluate()
    assert code == 0, text
    assert json.loads(text)["ndcg@20"] == pytest.approx(result.metrics["test"]["ndcg@20"], abs=1e-9)
    write_part(events, "2000", [("late", "0", "live-1", 1.8e9)])  # served after the run: not in its data
    code, text = evaluate()
    assert code == 0 and json.loads(text)["ndcg@20"] == pytest.approx(result.metrics["test"]["ndcg@20"], abs=1e-9)
    with pytest.raises(ValueError, match="--restart"):  # the checkpoints saw 7 events, there are 8 now
        train(config, tmp_path / "run", resume=True, progress=False)
    shutil.rmtree(events)
    code, text = evaluate()
    out = CliRunner().invoke(app, ["evaluate", "--run", str(result.run_dir), "--split", "test", "--json"])
    assert out.exit_code == 2, out.exception  # the CLI's one-line refusal, not a traceback
    assert "served events" in out.stderr and "are gone" in out.stderr and "Traceback" not in out.stderr
    assert np.isfinite(result.metrics["test"]["ndcg@20"])


def test_training_reads_events_where_the_server_was_told_to_flush_them(tmp_path, store, monkeypatch):
    """`RECSYS_SERVE_EVENTS_DIR` moves the server's events table; training reads the same setting, so a server
    started with it does not write where the next run never looks."""
    from feature_store.served_events import events_folder
    from recsys.config import get_settings
    from recsys.data import load_dataset
    from training.config import load_config
    from training.data import build_training_data
    from training.served_events_fold import dataset_reference

    folder = write_tiktok_slice(tmp_path / "slice", every=16)
    ds = load_dataset(str(folder))
    elsewhere = tmp_path / "events-elsewhere"
    monkeypatch.setenv("RECSYS_SERVE_EVENTS_DIR", str(elsewhere))
    get_settings.cache_clear()
    assert get_settings().served_events_root() == elsewhere
    item = ds.item_ids[3]
    write_part(events_folder(elsewhere, dataset_reference(str(folder), ds), ds.version), "1000",
               [("x1", "newcomer", item, 1.7e9)])
    config = load_config(write_test_config(tmp_path / "test.toml"), str(folder), [*OVERRIDES, "data.served_events=true"])
    data = build_training_data(config.data)
    assert data.served_events is not None and data.served_events.events == 1 and data.served_events.new_users == 1
    monkeypatch.delenv("RECSYS_SERVE_EVENTS_DIR")
    get_settings.cache_clear()
    assert get_settings().served_events_root() == store / "offline"
    assert build_training_data(config.data).served_events is None  # nothing under the store's own offline root
