"""The training job end to end on a small real TikTok slice: reproducibility, resume, refusals,
the run-directory contract, `recsys evaluate` on the run, the user encoder, the content-only baseline.

Every run uses `training_slices.TEST_CONFIG` (dim 16, 3 epochs, one torch thread): about a
second of training each, so the file is dominated by interpreter start-up of the CLI calls.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from commands.main import app
from recsys.artifact import load_run
from training.checkpoint import checkpoint_path
from training.config import load_config
from training.evaluation import evaluate_baseline
from training.run import train
from training_slices import write_test_config, write_tiktok_slice

ROOT = Path(__file__).resolve().parents[1]
RECSYS = [sys.executable, "-m", "commands.main"]
HEADLINE = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "mrr", "hit_rate@20", "coverage@20")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("training")
    folder = write_tiktok_slice(root / "tiktok-slice")
    config = write_test_config(root / "test.toml")
    return {"root": root, "folder": folder, "config": config}


@pytest.fixture(scope="module")
def reference(setup: dict) -> dict:
    """One uninterrupted in-process run (3 epochs) that other tests compare against."""
    cfg = load_config(setup["config"], str(setup["folder"]))
    result = train(cfg, setup["root"] / "reference", resume=False, progress=False)
    return {"dir": result.run_dir, "metrics": result.metrics, "config": cfg}


def _scores(metrics: dict) -> dict:
    return {split: {k: metrics[split][k] for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10", "mrr")}
            for split in ("valid", "test")}


def test_same_config_gives_the_same_metrics(setup: dict, reference: dict) -> None:
    again = train(reference["config"], setup["root"] / "again", resume=False, progress=False)
    assert _scores(again.metrics) == _scores(reference["metrics"])
    assert np.array_equal(np.load(again.run_dir / "item_vectors.npy"), np.load(reference["dir"] / "item_vectors.npy"))
    assert reference["metrics"]["valid"]["recall@20"] > 0.03  # it learned something (popularity alone: ~0.04)


def test_epochs_split_over_two_invocations_end_where_one_run_ends(setup: dict, reference: dict) -> None:
    run_dir = setup["root"] / "split"
    first = load_config(setup["config"], str(setup["folder"]), ["train.epochs=1"])
    train(first, run_dir, resume=False, progress=False)
    assert torch.load(checkpoint_path(run_dir), weights_only=True)["state"]["epoch"] == 1
    rest = train(reference["config"], run_dir, resume=True, progress=False)  # epochs=3: continues at 2
    assert [h["epoch"] for h in rest.metrics["history"]] == [1, 2, 3]
    assert _scores(rest.metrics) == _scores(reference["metrics"])


def test_a_sampled_step_run_is_reproducible_across_a_resume(setup: dict) -> None:
    """The sampled step (issue 14): its layer cache is rebuilt each epoch and SparseAdam's state is checkpointed,
    so a run split over two invocations ends where one run ends."""
    sampled = ["loss.step=sampled", "loss.fanout=4", "loss.alignment_weight=1.0", "loss.content_weight=0.3"]
    whole = train(load_config(setup["config"], str(setup["folder"]), sampled), setup["root"] / "sampled",
                  resume=False, progress=False)
    split_dir = setup["root"] / "sampled-split"
    train(load_config(setup["config"], str(setup["folder"]), sampled + ["train.epochs=1"]), split_dir, resume=False,
          progress=False)
    rest = train(load_config(setup["config"], str(setup["folder"]), sampled), split_dir, resume=True, progress=False)
    assert [h["epoch"] for h in rest.metrics["history"]] == [1, 2, 3]
    assert _scores(rest.metrics) == _scores(whole.metrics)
    assert whole.metrics["valid"]["recall@20"] > 0.03


def test_a_killed_run_resumes_to_the_same_metrics(setup: dict) -> None:
    """SIGKILL `recsys train` right after its first checkpoint, rerun the same command: same numbers as uninterrupted."""
    overrides = ["train.epochs=8"]
    whole = train(load_config(setup["config"], str(setup["folder"]), overrides), setup["root"] / "whole",
                  resume=False, progress=False)
    killed_dir = setup["root"] / "killed"
    command = [*RECSYS, "train", "--dataset", str(setup["folder"]), "--config", str(setup["config"]), "--no-progress",
               "--out", str(killed_dir), *[a for o in overrides for a in ("--set", o)]]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 90
    while not checkpoint_path(killed_dir).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = torch.load(checkpoint_path(killed_dir), weights_only=True)["state"]["epoch"]
    assert 1 <= saved < 8, f"the run was not interrupted mid-training (checkpoint after epoch {saved})"
    assert not (killed_dir / "metrics.json").exists()
    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch {saved}" in resumed.stderr  # the log line of Trainer.resume
    b = json.loads((killed_dir / "metrics.json").read_text())
    assert _scores(whole.metrics) == _scores(b)
    assert whole.best_epoch == b["best_epoch"] and len(b["history"]) == 8


def test_a_checkpoint_from_another_config_is_refused(setup: dict, reference: dict) -> None:
    other = load_config(setup["config"], str(setup["folder"]), ["train.lr=0.02"])
    with pytest.raises(ValueError, match="different config"):
        train(other, reference["dir"], resume=True, progress=False)
    result = CliRunner().invoke(app, ["train", "--dataset", str(setup["folder"]), "--config", str(setup["config"]),
                                      "--out", str(reference["dir"]), "--set", "train.lr=0.02", "--no-progress"])
    assert result.exit_code == 1
    assert "different config" in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_second_job_on_a_run_being_trained_is_refused_and_a_killed_holder_leaves_no_lock(setup: dict,
                                                                                          reference: dict) -> None:
    """Two `recsys train --out RUN` at once would overwrite each other's checkpoints: the second is refused."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from training.run_lock import exclusive_run\n"
         "with exclusive_run(Path(sys.argv[1])):\n    print('holding', flush=True); time.sleep(600)",
         str(reference["dir"])], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = CliRunner().invoke(app, ["train", "--dataset", str(setup["folder"]), "--config", str(setup["config"]),
                                          "--out", str(reference["dir"]), "--no-progress"])
        assert result.exit_code == 1
        assert f"being trained by pid {holder.pid}" in " ".join(result.output.split())
        assert result.exception is None or isinstance(result.exception, SystemExit)
    finally:
        holder.kill()
        holder.wait()
    # the kernel drops a dead holder's lock: the same command now resumes the finished run
    again = train(reference["config"], reference["dir"], resume=True, progress=False)
    assert _scores(again.metrics) == _scores(reference["metrics"])


def test_softmax_groups_train_on_the_full_step_and_are_refused_on_the_sampled_one(setup: dict) -> None:
    grouped = load_config(setup["config"], str(setup["folder"]), ["loss.softmax_group=64"])
    assert grouped.loss.kind == "softmax" and grouped.train.batch_size > 64
    result = train(grouped, setup["root"] / "grouped", resume=False, progress=False)
    assert result.metrics["valid"]["recall@20"] > 0.03  # it learned, as the one-softmax reference run does
    sampled = load_config(setup["config"], str(setup["folder"]), ["loss.softmax_group=64", 'loss.step="sampled"'])
    with pytest.raises(ValueError, match="softmax_group"):
        train(sampled, setup["root"] / "grouped-sampled", resume=False, progress=False)


@pytest.mark.parametrize("override, words", [
    ("model.no_such_knob=1", ["model.no_such_knob", "unknown key", "valid keys"]),
    ("train.lr=-1", ["train.lr", "greater than 0"]),
    ("model.fusion=median", ["fusion", "weighted"]),
    ("model.user_id_embedding=true", ["user_id_embedding", "not supported"]),
    ("train.lr", ["not key=value"]),
])
def test_bad_config_is_a_clear_cli_error(setup: dict, override: str, words: list[str]) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--dataset", str(setup["folder"]), "--config", str(setup["config"]),
                                 "--out", str(setup["root"] / "bad"), "--set", override, "--no-progress"])
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2, text
    assert "invalid config" in text and all(w in text for w in words), text
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (setup["root"] / "bad").exists()


def test_run_directory_holds_the_artefact(reference: dict) -> None:
    run_dir = reference["dir"]
    for name in ("config.toml", "run.json", "metrics.json", "item_vectors.npy", "user_vectors.npy", "user_encoder.pt",
                 "items.parquet", "users.parquet", "content_projection.pt", "item_media_vectors.npz"):
        assert (run_dir / name).exists(), name
    run = load_run(run_dir)
    assert run.meta["data_version"] and run.meta["config_fingerprint"] == reference["config"].fingerprint()
    assert run.config["model"]["dim"] == 16
    dim = 16 + 1  # + popularity coordinate
    assert run.item_vectors.shape == (run.items.height, dim)
    assert np.allclose(np.linalg.norm(run.item_vectors, axis=1), 1, atol=1e-4)
    reloaded = load_config(run_dir / "config.toml")  # the stored config reproduces the run's fingerprint
    assert reloaded.fingerprint() == reference["config"].fingerprint()


def test_evaluate_cli_reports_the_runs_metrics(reference: dict) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--run", str(reference["dir"]), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in HEADLINE:
        assert isinstance(report[key], float), key
    assert set(report["by_media"]) == {"image+audio"} and "recall@20" in report["by_media"]["image+audio"]
    assert report["cold_start"]["n_interactions"] > 0 and "recall@20" in report["cold_start"]
    for key in ("recall@20", "ndcg@20", "ndcg@10", "recall@10", "mrr"):  # same harness, same numbers
        assert report[key] == pytest.approx(reference["metrics"]["test"][key], abs=1e-9)


def test_user_encoder_reproduces_the_exported_user_vectors(reference: dict) -> None:
    from training.data import build_training_data

    run = load_run(reference["dir"])
    data = build_training_data(reference["config"].data)
    histories = data.train_histories()
    encoded = run.user_encoder.encode(histories)
    users = run.users.sort("user_index")
    exported = run.user_vectors[users["user_index"].to_numpy()]
    has_history = np.asarray([len(h) > 0 for h in histories])
    assert has_history.sum() > 1000
    assert np.abs(encoded[has_history] - exported[has_history]).max() < 1e-5
    # a live history that grew by one item moves the vector, and unknown items are ignored
    grown = run.user_encoder.encode([histories[0] + [histories[1][0]], histories[0] + [10**9]])
    assert not np.allclose(grown[0], exported[0]) and np.allclose(grown[1], encoded[0], atol=1e-6)


def test_content_only_baseline_runs_by_name(setup: dict) -> None:
    report = evaluate_baseline("content-only", str(setup["folder"]), split="test", set=["train.epochs=2", "model.dim=16",
                                                                                         "train.threads=1"])
    assert report["model_version"] == "baseline:content-only"
    assert 0 < report["recall@20"] < 1 and report["cold_start"]["n_interactions"] > 0
    torch.set_num_threads(1)
    out = CliRunner().invoke(app, ["evaluate", "--baseline", "content-only", "--dataset", str(setup["folder"]),
                                   "--split", "valid", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["model_version"] == "baseline:content-only"


def test_ensemble_members_take_their_own_overrides(setup: dict, reference: dict) -> None:
    """train.member_overrides: member 0 without an entry is the single seed-0 run; member 1 trains with its
    own settings (MLP projections, seed 7) and the mixed run serves and reloads like any ensemble."""
    sets = ["train.ensemble=2", 'train.member_overrides=[{}, {"model.projection_hidden" = 8, "train.seed" = 7}]']
    cfg = load_config(setup["config"], str(setup["folder"]), sets)
    assert cfg.member(0).fingerprint() == reference["config"].fingerprint()
    second = cfg.member(1)
    assert (second.model.projection_hidden, second.train.seed, second.train.ensemble) == (8, 7, 1)
    result = train(cfg, setup["root"] / "mixed", resume=False, progress=False)
    members = result.metrics["members"]
    assert [m["seed"] for m in members] == [0, 7] and "overrides" not in members[0]
    assert members[1]["overrides"] == {"model.projection_hidden": 8, "train.seed": 7}
    single = reference["metrics"]
    assert members[0]["valid"]["ndcg@20"] == single["history"][single["best_epoch"] - 1]["valid"]["ndcg@20"]
    assert result.metrics["train_serve_max_abs_diff"] < 1e-4
    assert load_config(result.run_dir / "config.toml").train.member_overrides == cfg.train.member_overrides
    report = CliRunner().invoke(app, ["evaluate", "--run", str(result.run_dir), "--split", "test", "--json"])
    assert json.loads(report.stdout)["recall@20"] == pytest.approx(result.metrics["test"]["recall@20"], abs=1e-9)


def test_a_pilot_keeps_the_candidate_valid_scores_best(setup: dict, reference: dict) -> None:
    """train.pilot: each candidate trains member 0; the best on valid applies to every member and its tower is
    member 0; the candidates' towers checkpoint under pilot/<i>/, so a second run resumes them all.
    (pilot_epochs = 0: every candidate trains to its end before the choice.)"""
    sets = ["train.ensemble=2", 'train.pilot=[{"train.lr" = 1e-9}, {}]', "train.pilot_epochs=0"]
    cfg = load_config(setup["config"], str(setup["folder"]), sets)
    result = train(cfg, setup["root"] / "pilot", resume=False, progress=False)
    report = result.metrics["pilot"]
    frozen, trained = report["candidates"]
    assert frozen["settings"] == {"train.lr": 1e-9} and trained["settings"] == {}
    assert trained["valid"] > frozen["valid"]  # lr 1e-9 leaves the tower where it started
    assert report["chosen"] == 1 and report["metric"] == "ndcg@20"
    single = reference["metrics"]  # candidate {} is the reference config: its tower is member 0, not retrained
    members = result.metrics["members"]
    assert members[0]["valid"]["ndcg@20"] == trained["valid"] == single["history"][single["best_epoch"] - 1]["valid"]["ndcg@20"]
    assert [m["seed"] for m in members] == [0, 1] and members[1]["history"][0]["lr"] != 1e-9
    assert (setup["root"] / "pilot" / "pilot" / "0").is_dir() and (setup["root"] / "pilot" / "members" / "1").is_dir()
    again = train(cfg, setup["root"] / "pilot", resume=True, progress=False)
    assert again.metrics["pilot"] == report and _scores(again.metrics) == _scores(result.metrics)
    assert sum(len(m["history"]) for m in again.metrics["members"]) == sum(len(m["history"]) for m in members)


def test_a_pilot_decided_early_trains_only_the_leader_on_and_ends_where_an_uninterrupted_run_ends(
        setup: dict, reference: dict) -> None:
    """train.pilot_epochs (successive halving): after epoch 1 the frozen-lr candidate trails and stops there; the
    leader resumes its own checkpoint and ends exactly on the uninterrupted reference run's tower."""
    sets = ['train.pilot=[{"train.lr" = 1e-9}, {}]', "train.pilot_epochs=1"]
    cfg = load_config(setup["config"], str(setup["folder"]), sets)
    assert cfg.fingerprint() == load_config(setup["config"], str(setup["folder"]),
                                            sets[:1] + ["train.pilot_epochs=0"]).fingerprint()
    result = train(cfg, setup["root"] / "pilot-early", resume=False, progress=False)
    report = result.metrics["pilot"]
    frozen, trained = report["candidates"]
    assert report["decided_at_epoch"] == 1 and report["chosen"] == 1
    assert frozen["epochs_at_decision"] == 1 and trained["epochs_at_decision"] == 1
    single = reference["metrics"]
    assert trained["valid"] == single["history"][0]["valid"]["ndcg@20"] > frozen["valid"]
    assert trained["final_valid"] == single["history"][single["best_epoch"] - 1]["valid"]["ndcg@20"]
    assert trained["best_epoch"] == single["best_epoch"]
    assert [h["epoch"] for h in result.metrics["history"]] == [1, 2, 3]
    assert _scores(result.metrics) == _scores(single)
    assert np.array_equal(np.load(result.run_dir / "item_vectors.npy"), np.load(reference["dir"] / "item_vectors.npy"))
    frozen_state = torch.load(checkpoint_path(setup["root"] / "pilot-early" / "pilot" / "0"), weights_only=True)["state"]
    assert frozen_state["epoch"] == 1  # the trailing candidate never trained past the decision
    again = train(cfg, setup["root"] / "pilot-early", resume=True, progress=False)
    assert again.metrics["pilot"] == report and _scores(again.metrics) == _scores(single)


def test_an_ensemble_is_one_two_tower(setup: dict, reference: dict) -> None:
    """train.ensemble=2: member 0 is the single run, the run serves concatenated unit vectors end to end."""
    from recsys.models import project_content
    from training.data import build_training_data

    cfg = load_config(setup["config"], str(setup["folder"]), ["train.ensemble=2"])
    result = train(cfg, setup["root"] / "ensemble", resume=False, progress=False)
    members = result.metrics["members"]
    assert [m["seed"] for m in members] == [0, 1]
    single = reference["metrics"]  # member 0 = the seed-0 run: same best epoch, same valid score during training
    assert members[0]["best_epoch"] == single["best_epoch"]
    assert members[0]["valid"]["ndcg@20"] == single["history"][single["best_epoch"] - 1]["valid"]["ndcg@20"]
    run = load_run(result.run_dir)
    assert run.item_vectors.shape[1] == 2 * 17 and np.allclose(np.linalg.norm(run.item_vectors, axis=1), 1, atol=1e-4)
    histories = build_training_data(cfg.data).train_histories()
    has = np.asarray([len(h) > 0 for h in histories])
    assert np.abs(run.user_encoder.encode(histories)[has] - run.user_vectors[has]).max() < 1e-5
    query = np.load(Path(setup["folder"]) / "image_feat.npy")[:3].astype(np.float32)
    projected = project_content(run, "image", query)
    assert projected.shape == (3, 34) and np.allclose(np.linalg.norm(projected, axis=1), 1, atol=1e-5)
    # the evaluation harness scores the concatenated vectors exactly as training did
    report = CliRunner().invoke(app, ["evaluate", "--run", str(result.run_dir), "--split", "test", "--json"])
    assert json.loads(report.stdout)["recall@20"] == pytest.approx(result.metrics["test"]["recall@20"], abs=1e-9)
