"""`evaluate_run`, `per_user_metrics` and `recsys evaluate` on a tiny run directory built here.

The run is a BPR-MF fitted on a planted two-cluster dataset and exported with
`save_baseline_run` (no dependency on the two-tower trainer). Because the export keeps every
user's ranking, the run path must reproduce the in-memory baseline's metrics exactly.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.main import app
from recsys.artifact import RunDirError, load_run, save_run
from recsys.baselines.bpr import BPRMF
from recsys.baselines.export import save_baseline_run
from recsys.data import load_dataset
from training.evaluation import evaluate_baseline, evaluate_run, per_user_metrics
from training.evaluation_protocol import EvaluationError, prepare_split
from training.evaluation_ranking import per_user_frame, ranking_report

N_USERS, N_ITEMS, COLD = 30, 40, (36, 37, 38, 39)
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr", "hit_rate@20", "coverage@20")


def write_tiny_dataset(folder: Path) -> Path:
    """TikTok layout (row i of the feature files = item i). Users 0-14 consume items 0-19, users
    15-29 items 20-39; items 36-39 appear only in test. Items 0-4 have no audio (media 'image')."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(N_USERS):
        block = [i for i in (range(20) if u < 15 else range(20, 40)) if i not in COLD]
        picks = rng.choice(block, size=8, replace=False)
        splits = ["train"] * 6 + ["valid", "test"]
        if u >= 15 and u % 3 == 0:
            picks[-1] = COLD[u % 4]
        rows += [(u, int(i), s) for i, s in zip(picks, splits)]
    folder.mkdir(parents=True, exist_ok=True)
    schema = {"user_id": pl.Int32, "item_id": pl.Int32, "split": pl.String}
    pl.DataFrame(rows, schema=schema, orient="row").write_parquet(folder / "interactions.parquet")
    image = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    audio = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    audio[:5] = 0
    np.save(folder / "image_feat.npy", image)
    np.save(folder / "audio_feat.npy", audio)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tiny")
    folder = write_tiny_dataset(root / "tinyset")
    ev = prepare_split(load_dataset(folder), "test")
    model = BPRMF(epochs=40, dim=16, lr=0.02).fit(ev.dataset, ev.train)
    run_dir = save_baseline_run(model, ev.dataset, ev.train, root / "run", "predefined", dataset_ref=str(folder))
    return {"folder": folder, "run": run_dir, "model": model, "ev": ev, "root": root}


def test_run_metrics_equal_the_in_memory_model(tiny):
    report = evaluate_run(tiny["run"], "test")
    expected = ranking_report(tiny["model"].score, tiny["ev"])
    for key in METRICS:
        assert report[key] == pytest.approx(expected[key], abs=1e-9), key
    assert report["n_users"] == N_USERS and report["split"] == "test" and report["split_strategy"] == "predefined"
    assert report["ranked_from"] == "train"  # DiffMM's held-out sets are random draws: ranked from train alone
    assert report["model_version"] == load_run(tiny["run"]).model_version


def test_ranking_report_has_media_groups_and_cold_start(tiny):
    report = evaluate_run(tiny["run"], "test")
    assert set(report["by_media"]) == {"image", "image+audio"}
    assert sum(g["n_interactions"] for g in report["by_media"].values()) == N_USERS
    cold = report["cold_start"]
    assert cold["n_interactions"] == sum(1 for u in range(15, 30) if u % 3 == 0)
    assert cold["n_cold_items"] == len(COLD)
    assert {"recall@20", "ndcg@20"} <= set(cold)


def test_items_are_matched_by_id_not_by_row(tiny, tmp_path):
    run = load_run(tiny["run"])
    perm = np.random.default_rng(1).permutation(run.items.height)  # new row r holds old item perm[r]
    items = run.items[perm].with_columns(pl.Series("item_index", np.arange(run.items.height), dtype=pl.Int32))
    save_run(tmp_path / "shuffled", model_version="shuffled", dataset=run.dataset, data_version=run.meta["data_version"],
             config={}, items=items, users=run.users, item_vectors=run.item_vectors[perm],
             user_vectors=run.user_vectors, user_encoder_payload={"kind": "mean_pool"},
             extra_meta={"split_strategy": "predefined"})
    a, b = evaluate_run(tiny["run"]), evaluate_run(tmp_path / "shuffled")
    assert all(a[k] == pytest.approx(b[k]) for k in METRICS)


def test_per_user_metrics_contract(tiny):
    frame = per_user_metrics(tiny["run"], "test")
    assert frame.columns == ["user_id", "n_train", "media", "recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr", "hit_rate@20"]
    assert frame.schema["user_id"] == pl.String and frame.schema["n_train"] == pl.Int64 and frame.schema["media"] == pl.String
    assert all(frame.schema[c] == pl.Float64 for c in frame.columns[3:])
    assert frame.height == N_USERS and frame["user_id"].n_unique() == N_USERS
    assert (frame["n_train"] == 6).all()
    assert set(frame["media"].to_list()) <= {"image", "image+audio"}
    assert frame["recall@20"].mean() == pytest.approx(evaluate_run(tiny["run"])["recall@20"])


def test_cold_start_task_reports_both_candidate_sets(tiny):
    report = evaluate_run(tiny["run"], "test", task="cold-start")
    assert report["n_cold_items"] == len(COLD) and report["candidates"].startswith("cold items")
    assert report["random_recall@20"] == 1.0  # 4 cold candidates < 20
    assert report["popularity_recall@20"] == report["random_recall@20"]
    assert {"recall@20", "popularity_recall@20", "random_recall@20"} <= set(report["all_items"])
    assert 0 < report["all_items"]["random_recall@20"] < 1


def test_cross_media_task_reads_the_runs_media_vectors(tiny, tmp_path):
    run_dir = tmp_path / "with_media"
    shutil.copytree(tiny["run"], run_dir)
    vectors = np.random.default_rng(2).normal(size=(N_ITEMS, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.savez(run_dir / "item_media_vectors.npz", image=vectors, audio=vectors)
    report = evaluate_run(run_dir, "test", task="cross-media")
    assert report["n_held_out"] == len(COLD)
    assert report["image_to_audio_recall@10"] == 1.0 and report["audio_to_image_recall@10_all_items"] == 1.0
    via_cli = json.loads(cli("--run", str(run_dir), "--task", "cross-media", "--json").stdout)
    assert {"image_to_audio_recall@10", "audio_to_image_recall@10", "image_to_audio_recall@10_all_items",
            "audio_to_image_recall@10_all_items", "chance@10"} <= set(via_cli)
    with pytest.raises(RunDirError, match="item_media_vectors.npz"):
        evaluate_run(tiny["run"], "test", task="cross-media")


def test_baseline_harness_uses_the_same_split(tiny):
    report = evaluate_baseline("most-popular", str(tiny["folder"]), "test")
    assert report["model_version"] == "baseline:most-popular" and report["n_users"] == N_USERS
    assert report["split_strategy"] == "predefined" and "fit_seconds" in report


def test_bad_requests_raise_clear_errors(tiny, tmp_path):
    with pytest.raises(EvaluationError, match="unknown split"):
        evaluate_run(tiny["run"], "train")
    with pytest.raises(EvaluationError, match="unknown task"):
        evaluate_run(tiny["run"], "test", task="nope")
    broken = tmp_path / "broken"
    shutil.copytree(tiny["run"], broken)
    (broken / "user_vectors.npy").write_bytes(b"not numpy")
    with pytest.raises(RunDirError, match="corrupt"):
        evaluate_run(broken)


# ---- the CLI contract ---------------------------------------------------------------------------

def cli(*args: str):
    return CliRunner().invoke(app, ["evaluate", *args])


def test_cli_prints_one_json_object(tiny):
    result = cli("--run", str(tiny["run"]), "--split", "test", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr", "hit_rate@20", "coverage@20", "by_media",
            "cold_start", "n_users", "model_version", "split"} <= set(report)


def test_cli_cold_start_and_baseline_modes(tiny):
    cold = json.loads(cli("--run", str(tiny["run"]), "--json", "--task", "cold-start").stdout)
    assert {"recall@20", "popularity_recall@20", "random_recall@20"} <= set(cold)
    base = cli("--baseline", "most-popular", "--dataset", str(tiny["folder"]), "--split", "test", "--json")
    assert base.exit_code == 0, base.stderr
    assert json.loads(base.stdout)["model_version"] == "baseline:most-popular"


@pytest.mark.parametrize("args, message", [
    (("--run", "/nonexistent/run"), "does not exist"),
    (("--run", "{broken}"), "missing user_vectors.npy"),
    (("--baseline", "most-popular", "--dataset", "no-such-dataset"), "not found"),
    (("--run", "{run}", "--split", "bogus"), "unknown split"),
    (("--baseline", "nope", "--dataset", "{folder}"), "unknown baseline"),
    (("--run", "{run}", "--baseline", "most-popular"), "either"),
])
def test_cli_errors_are_one_line_with_exit_code_2(tiny, tmp_path, args, message):
    broken = tmp_path / "broken"
    shutil.copytree(tiny["run"], broken)
    (broken / "user_vectors.npy").unlink()
    filled = [a.format(broken=broken, run=tiny["run"], folder=tiny["folder"]) for a in args]
    result = cli(*filled, "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr


def test_users_without_a_run_vector_are_served_popularity(tiny, tmp_path):
    run = load_run(tiny["run"])
    keep = run.users.filter(pl.col("user_index") >= 5)  # the run forgets users 0-4
    save_run(tmp_path / "partial", model_version="partial", dataset=run.dataset, data_version=run.meta["data_version"],
             config={}, items=run.items, users=keep.with_columns(pl.col("user_index") - 5),
             item_vectors=run.item_vectors, user_vectors=run.user_vectors[5:], user_encoder_payload={"kind": "mean_pool"},
             extra_meta={"split_strategy": "predefined"})
    assert evaluate_run(tmp_path / "partial")["n_users_unknown_to_run"] == 5
    forgotten = set(run.users.filter(pl.col("user_index") < 5)["user_id"].cast(pl.String).to_list())
    partial = per_user_metrics(tmp_path / "partial", "test").filter(pl.col("user_id").is_in(forgotten))
    popular = per_user_frame(lambda b: np.tile(tiny["ev"].popularity, (len(b), 1)), tiny["ev"]).filter(
        pl.col("user_id").is_in(forgotten))
    assert partial.height == 5 and partial.equals(popular)
