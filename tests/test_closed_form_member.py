"""The closed-form EASE member (`training.closed_form`, `recsys.models.closed_form`): fitted after the towers,
kept at the weight valid chooses, and served through the same concatenation as every member.

Real data: the small TikTok slice of `training_slices` (dim 16, 3 epochs, one thread: ~15 s per run).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from commands.main import app
from recsys.artifact import load_run
from recsys.baselines.ease import solve
from recsys.baselines.gfcf import factored_filter
from recsys.models.closed_form import CLOSED_FORM_KIND, HistoryTableTower, factor_weights, item_part
from recsys.models.content_projection import load_content_path
from recsys.models.ensemble import MemberConcat, load_ensemble_encoder
from recsys.models.user_encoder import TowerUserEncoder, history_tensors
from training.config import load_config
from training.data import build_training_data
from training.model_card import write_model_card
from training.run import train
from training_slices import write_test_config, write_tiktok_slice

DIM = 16  # training_slices.TEST_CONFIG


def planted_gram(n_users: int = 300, n_items: int = 40, seed: int = 0) -> np.ndarray:
    """Users who each read one of four item blocks (plus noise): a Gram matrix with clear item-item structure."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < 0.03).astype(np.float64)
    blocks = np.arange(n_items) // (n_items // 4)
    for u in range(n_users):
        x[u, rng.choice(np.flatnonzero(blocks == u % 4), size=4, replace=False)] = 1.0
    return x.T @ x


def test_factors_reproduce_the_weights_and_keep_the_ranking() -> None:
    weights = solve(planted_gram(), 10.0)
    history, items = factor_weights(weights, rank=weights.shape[0] - 1)
    assert np.linalg.norm(history @ items.T - weights) < 0.02 * np.linalg.norm(weights)  # all but the last factor
    history, items = factor_weights(weights, rank=8)  # low rank: the top items of a block's user stay in the block
    user = np.zeros(weights.shape[0], np.float32)
    user[[0, 1, 2]] = 1.0  # three items of block 0
    top = np.argsort(-(user @ history @ items.T))[:7]
    assert set(top) <= set(range(10)), top


def test_the_factored_graph_filter_is_gfcf_with_a_flattened_spectrum() -> None:
    """`factored_filter` at full rank: history . items^T = (R~^T R~)^1/2 + alpha D^-1/2 V_k V_k^T D^1/2 (GF-CF with
    the linear filter's singular values S in place of S^2, what ranks better once the spectrum is cut)."""
    rng = np.random.default_rng(0)
    dense = (rng.random((60, 12)) < 0.3).astype(np.float64)
    dense[np.arange(12), np.arange(12)] = 1.0  # every item consumed
    from scipy import sparse

    history, items = factored_filter(sparse.csr_matrix(dense.astype(np.float32)), rank=11, alpha=0.3, low_pass=4)
    assert history.shape == items.shape == (12, 11 + 4)
    d_u, d_i = dense.sum(1), dense.sum(0)
    normalised = dense / np.sqrt(np.maximum(d_u, 1))[:, None] / np.sqrt(d_i)[None, :]
    _, spread, vt = np.linalg.svd(normalised)
    linear = vt[:11].T @ np.diag(spread[:11]) @ vt[:11]
    low_pass = np.diag(d_i ** -0.5) @ vt[:4].T @ vt[:4] @ np.diag(d_i ** 0.5)
    assert np.allclose(history @ items.T, linear + 0.3 * low_pass, atol=2e-3)


def test_items_without_interactions_score_zero_for_everyone_at_unit_norm() -> None:
    table = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    table[3] = 0.0
    part = item_part(table, np.array([True, True, False, True, True]))
    assert np.allclose(np.linalg.norm(part, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(part[2], [0, 0, 0, 1]) and np.array_equal(part[3], [0, 0, 0, 1])  # not scorable, or empty
    assert np.all(part[[0, 1, 4], -1] == 0)
    users = HistoryTableTower(table)(*history_tensors([[0, 1], [], [4]]))
    assert np.all(users[:, -1].numpy() == 0) and np.allclose(users[1].numpy(), 0)  # no history: no member part
    assert np.allclose((users @ torch.as_tensor(part).T)[:, [2, 3]].numpy(), 0)


def test_served_history_table_is_the_normalised_sum_and_survives_weights_only_load(tmp_path: Path) -> None:
    table = np.random.default_rng(1).normal(size=(30, 6)).astype(np.float32)
    tower = HistoryTableTower(table)
    torch.save(tower.payload(), tmp_path / "member.pt")
    loaded = HistoryTableTower.from_payload(torch.load(tmp_path / "member.pt", weights_only=True))
    histories = [[3, 7, 9], [12], []]
    expected = [table[h].sum(0) / np.linalg.norm(table[h].sum(0)) if h else np.zeros(6) for h in histories]
    got = loaded(*history_tensors(histories)).numpy()
    assert np.allclose(got[:, :-1], expected, atol=1e-6) and np.all(got[:, -1] == 0)
    bad = tower.payload()
    bad["rank"] = 5
    with pytest.raises(ValueError, match="shape"):
        HistoryTableTower.from_payload(bad)
    # request-sized batches run the ONNX export of the same module, checked against it at load
    encoder = TowerUserEncoder(MemberConcat([loaded], [1.0]), "two_tower_ensemble", runtime="onnxruntime")
    assert encoder.runtime == "onnxruntime"
    assert np.allclose(encoder.encode([[3, 7, 9]])[0], got[0], atol=1e-5)


def test_a_half_life_weights_the_newest_history_items_more() -> None:
    table = np.random.default_rng(2).normal(size=(30, 6)).astype(np.float32)
    tower = HistoryTableTower(table, half_life=2.0)
    summed = table[9] + 2 ** -0.5 * table[7] + 0.5 * table[3]  # oldest first: 3 (age 2), 7 (age 1), 9 (newest)
    got = tower(*history_tensors([[3, 7, 9]])).numpy()[0]
    assert np.allclose(got[:-1], summed / np.linalg.norm(summed), atol=1e-6)
    loaded = HistoryTableTower.from_payload(tower.payload())
    assert loaded.half_life == 2.0
    encoder = TowerUserEncoder(MemberConcat([loaded], [1.0]), "two_tower_ensemble", runtime="onnxruntime")
    assert encoder.runtime == "onnxruntime" and np.allclose(encoder.encode([[3, 7, 9]])[0], got, atol=1e-5)


def test_an_ensemble_member_of_unknown_kind_is_refused() -> None:
    member = HistoryTableTower(np.ones((4, 2), np.float32)).payload()
    with pytest.raises(ValueError, match="kind 'pickled_module'"):
        load_ensemble_encoder({"members": [member, {**member, "kind": "pickled_module"}], "weights": [1.0, 1.0]})
    assert member["kind"] == CLOSED_FORM_KIND


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("closed_form")
    return {"root": root, "folder": write_tiktok_slice(root / "tiktok-slice"), "config": write_test_config(root / "t.toml")}


@pytest.fixture(scope="module")
def forced(setup: dict) -> dict:
    """A run that must keep the member (its only weight is 1)."""
    cfg = load_config(setup["config"], str(setup["folder"]), ["ease.weights=[1.0]"])
    result = train(cfg, setup["root"] / "forced", resume=False, progress=False)
    return {"config": cfg, "result": result, "run": load_run(result.run_dir)}


def test_the_member_serves_as_one_two_tower(setup: dict, forced: dict) -> None:
    result, run, cfg = forced["result"], forced["run"], forced["config"]
    described = result.metrics["closed_form"]
    assert described["kind"] == "ease" and described["weight"] == 1.0 and described["rank"] == DIM
    assert run.meta["closed_form"]["lambda"] == described["lambda"] and run.meta["ensemble"] == 1
    width = (DIM + 1) + (DIM + 1)  # tower (+ popularity coordinate) | member (+ its "never seen" coordinate)
    assert run.item_vectors.shape[1] == width
    assert np.allclose(np.linalg.norm(run.item_vectors, axis=1), 1.0, atol=1e-4)
    assert result.metrics["train_serve_max_abs_diff"] < 1e-4
    # the served encoder (ONNX for request batches, the module for large ones) gives the exported vectors
    histories = build_training_data(cfg.data).train_histories()
    encoder = run.user_encoder
    assert encoder.runtime == "onnxruntime"
    assert np.abs(encoder.encode(histories) - run.user_vectors).max() < 1e-5
    assert np.abs(encoder.encode(histories[:4]) - run.user_vectors[:4]).max() < 1e-5
    report = CliRunner().invoke(app, ["evaluate", "--run", str(result.run_dir), "--split", "test", "--json"])
    assert json.loads(report.stdout)["ndcg@20"] == pytest.approx(result.metrics["test"]["ndcg@20"], abs=1e-9)


def test_content_reaches_the_run_without_the_member(setup: dict, forced: dict) -> None:
    """A live-added item gets the member's "never seen" coordinate; a content query gets zeros there."""
    path = load_content_path(forced["result"].run_dir)
    image = np.load(Path(setup["folder"]) / "image_feat.npy")[:2].astype(np.float32)
    item = path.embed_item({"image": image[0]})
    member = item[DIM + 1:]
    assert np.allclose(member[:-1], 0) and member[-1] > 0 and np.linalg.norm(item) == pytest.approx(1, abs=1e-5)
    users = forced["run"].user_vectors
    assert np.allclose(users[:, -1], 0)  # so the member scores the new item 0 for every user
    query = path.project("image", image)
    assert np.allclose(query[:, DIM + 1:], 0) and np.allclose(np.linalg.norm(query, axis=1), 1, atol=1e-5)


def test_valid_chooses_the_weight_and_the_towers_resume(setup: dict) -> None:
    """The kept weight is the best on valid (0 = no member), the run's served valid figure is that score,
    and the member's settings are outside the tower's fingerprint, so changing them resumes the trained
    tower (its checkpoint) instead of retraining it: the same run without the member scores weight 0's figure."""
    run_dir = setup["root"] / "chosen"
    cfg = load_config(setup["config"], str(setup["folder"]), ["ease.weights=[0, 0.5, 1, 4]"])
    plain = load_config(setup["config"], str(setup["folder"]))
    assert cfg.member(0).fingerprint() == plain.fingerprint() and cfg.fingerprint() != plain.fingerprint()
    result = train(cfg, run_dir, resume=False, progress=False)
    described = result.metrics["closed_form"]
    scores = {float(k): v for k, v in described["valid_by_weight"].items()}
    assert set(scores) == {0.0, 0.5, 1.0, 4.0}
    best = max(scores, key=scores.get)
    assert float(described["best_candidate"]) == best and best > 0, "the member lost on this slice: pick one where it helps"
    assert described["gain_se"] > 1.0, "kept only when ahead by more than the noise (ease.min_gain_se)"
    assert described["weight"] == best
    assert load_run(run_dir).meta["closed_form"]["weight"] == described["weight"]
    assert result.metrics["valid"]["ndcg@20"] == pytest.approx(scores[described["weight"]], abs=1e-9)
    without = train(load_config(setup["config"], str(setup["folder"]), ["ease.weights=[0]"]), run_dir,
                    resume=True, progress=False)
    assert "closed_form" not in without.metrics and "closed_form" not in load_run(run_dir).meta  # turned off
    assert without.metrics["valid"]["ndcg@20"] == pytest.approx(scores[0.0], abs=1e-9)


def test_the_member_may_be_chosen_by_its_own_valid_metric(setup: dict) -> None:
    """`ease.select_metric = "mrr"`: every candidate is scored by valid MRR (every user's rank of the held-out item)
    and the best by MRR serves, while the towers' epochs stay chosen by `train.select_metric`."""
    weights = ["ease.weights=[0, 0.5, 1, 4]", "ease.min_gain_se=0"]
    by_ndcg = train(load_config(setup["config"], str(setup["folder"]), weights), setup["root"] / "by-ndcg",
                    resume=False, progress=False)
    assert by_ndcg.metrics["closed_form"]["select_metric"] == "ndcg@20"  # train.select_metric, the default
    cfg = load_config(setup["config"], str(setup["folder"]), [*weights, 'ease.select_metric="mrr"'])
    result = train(cfg, setup["root"] / "by-ndcg", resume=True, progress=False)  # the same towers, resumed
    described = result.metrics["closed_form"]
    assert described["select_metric"] == "mrr"
    scores = {float(k): v for k, v in described["valid_by_weight"].items()}
    best = max(scores, key=scores.get)
    assert described["weight"] == best
    # (the served re-encoding moves scores by float32 rounding, which MRR's exact ranks feel at 1e-8)
    assert result.metrics["valid"]["mrr"] == pytest.approx(scores[best], abs=1e-6)
    assert by_ndcg.metrics["valid"]["mrr"] <= result.metrics["valid"]["mrr"] + 1e-6  # MRR's best is at least as good
    assert by_ndcg.metrics["valid"]["ndcg@20"] == pytest.approx(max(by_ndcg.metrics["closed_form"]["valid_by_weight"].values()), abs=1e-9)


def test_a_winning_largest_weight_is_doubled_while_valid_improves(setup: dict) -> None:
    """`ease.extend_weights`: the grid's end is never the answer by construction. On this slice the member helps
    (the test above), so a grid that stops at .25 must be extended: 0.5 tried, each doubling kept only while valid
    rises, the run serving the best of all."""
    cfg = load_config(setup["config"], str(setup["folder"]), ["ease.weights=[0, 0.25]", "ease.extend_weights=4"])
    result = train(cfg, setup["root"] / "extended", resume=False, progress=False)
    described = result.metrics["closed_form"]
    scores = {float(k): v for k, v in described["valid_by_weight"].items()}
    tried = sorted(scores)
    assert tried[:3] == [0.0, 0.25, 0.5] and all(b == 2 * a for a, b in zip(tried[1:], tried[2:]))
    assert len(tried) <= 2 + 4
    for before, after in zip(tried[1:-1], tried[2:-1]):  # every doubling but the last was an improvement
        assert scores[after] > scores[before]
    best = max(scores, key=scores.get)
    assert float(described["best_candidate"]) == best and described["weight"] == best
    assert best == tried[-1] if len(tried) == 6 else best == tried[-2]  # the last doubling lost, or the limit
    assert result.metrics["valid"]["ndcg@20"] == pytest.approx(scores[best], abs=1e-9)


def test_valid_chooses_the_half_life_with_the_weight(setup: dict) -> None:
    cfg = load_config(setup["config"], str(setup["folder"]), ["ease.weights=[0, 1]", "ease.half_lives=[0, 4]"])
    result = train(cfg, setup["root"] / "half-life", resume=False, progress=False)
    described = result.metrics["closed_form"]
    assert set(described["valid_by_weight"]) == {"0", "1@0", "1@4"}  # weight 0 is tried once: it has no history sum
    best = max(described["valid_by_weight"], key=described["valid_by_weight"].get)
    assert described["best_candidate"] == best
    kept = best != "0" and described["gain_se"] > 1.0  # ease.min_gain_se
    assert described["weight"] == (1.0 if kept else 0.0)
    if kept:
        assert best == f"1@{described['half_life']:g}"
    served = described["valid_by_weight"][best if kept else "0"]
    assert result.metrics["valid"]["ndcg@20"] == pytest.approx(served, abs=1e-9)


def test_a_gain_inside_the_noise_keeps_the_towers_alone(setup: dict) -> None:
    """`ease.min_gain_se` set above any gain: valid's best candidate is reported, the run serves the towers alone."""
    cfg = load_config(setup["config"], str(setup["folder"]), ["ease.weights=[0, 0.5]", "ease.min_gain_se=1000"])
    result = train(cfg, setup["root"] / "guarded", resume=False, progress=False)
    described = result.metrics["closed_form"]
    assert described["weight"] == 0.0 and described["best_candidate"] == "0.5" and 0 < described["gain_se"] < 1000
    assert "closed_form" not in load_run(result.run_dir).meta
    assert result.metrics["valid"]["ndcg@20"] == pytest.approx(described["valid_by_weight"]["0"], abs=1e-9)


def test_bad_member_settings_are_refused_and_large_catalogues_skip_it(setup: dict) -> None:
    with pytest.raises(ValueError, match="none negative"):
        load_config(setup["config"], str(setup["folder"]), ["ease.weights=[-1]"])
    cfg = load_config(setup["config"], str(setup["folder"]), ["ease.weights=[1.0]", "ease.max_items=2"])
    result = train(cfg, setup["root"] / "too-large", resume=False, progress=False)
    assert result.metrics["closed_form"] == {"kind": "ease", "weight": 0.0, "skipped": "3231 items is over ease.max_items 2"}
    assert "closed_form" not in load_run(result.run_dir).meta


def test_valid_chooses_the_item_form_with_the_weight(setup: dict) -> None:
    """`ease.item_forms`: unit item rows and rows that keep EASE's column lengths are both tried; the served
    run is the candidate valid chose, every item vector still unit-norm."""
    cfg = load_config(setup["config"], str(setup["folder"]),
                      ["ease.weights=[0, 1]", 'ease.item_forms=["unit", "lengths"]', "ease.min_gain_se=0"])
    result = train(cfg, setup["root"] / "forms", resume=False, progress=False)
    described = result.metrics["closed_form"]
    assert set(described["valid_by_weight"]) == {"0", "1", "1 lengths"}
    best = max(described["valid_by_weight"], key=described["valid_by_weight"].get)
    assert described["best_candidate"] == best
    assert described["item_form"] == ("lengths" if best.endswith("lengths") else "unit")
    assert result.metrics["valid"]["ndcg@20"] == pytest.approx(described["valid_by_weight"][best], abs=1e-9)
    if best != "0":
        run = load_run(result.run_dir)
        assert np.allclose(np.linalg.norm(run.item_vectors, axis=1), 1.0, atol=1e-4)
        assert result.metrics["train_serve_max_abs_diff"] < 1e-4
    with pytest.raises(ValueError, match="item_forms"):
        load_config(setup["config"], str(setup["folder"]), ['ease.item_forms=["cosine"]'])


def test_valid_chooses_the_closed_form_kind_and_gf_cf_fits_any_catalogue(setup: dict) -> None:
    """`ease.kinds`: EASE and GF-CF both tried with every weight, the served candidate the best on valid; over
    `ease.max_items` only EASE drops out, and a refit refits the kind valid chose."""
    cfg = load_config(setup["config"], str(setup["folder"]), ["ease.weights=[0, 1]", 'ease.kinds=["ease", "gf-cf"]',
                                                             "ease.gfcf_rank=32", "ease.min_gain_se=0"])
    result = train(cfg, setup["root"] / "kinds", resume=False, progress=False)
    described = result.metrics["closed_form"]
    assert set(described["valid_by_weight"]) == {"0", "ease 1", "gf-cf 1"}
    best = max(described["valid_by_weight"], key=described["valid_by_weight"].get)
    assert described["best_candidate"] == best
    assert result.metrics["valid"]["ndcg@20"] == pytest.approx(described["valid_by_weight"][best], abs=1e-9)
    if best != "0":
        assert described["kind"] == best.split()[0]
        assert ("lambda" in described) == (described["kind"] == "ease")
    large = load_config(setup["config"], str(setup["folder"]), ["ease.weights=[1]", 'ease.kinds=["ease", "gf-cf"]',
                                                               "ease.gfcf_rank=32", "ease.max_items=2",
                                                               "ease.min_gain_se=0", "train.refit=true"])
    result = train(large, setup["root"] / "kinds-large", resume=False, progress=False)
    described = result.metrics["closed_form"]
    assert described["kind"] == "gf-cf" and described["weight"] == 1.0 and described["rank"] == 32 + 256
    assert set(described["valid_by_weight"]) == {"1"}  # one kind left: labels as before kinds existed
    run = load_run(result.run_dir)
    assert run.meta["closed_form"]["kind"] == "gf-cf" and result.metrics["train_serve_max_abs_diff"] < 1e-4
    assert "refit" in result.metrics and run.item_vectors.shape[1] == (DIM + 1) + (32 + 256 + 1)
    card = write_model_card(result.run_dir).read_text()  # what people read names the kind (GF-CF has no lambda)
    assert "a closed-form GF-CF member (weight 1 chosen on valid, rank 288" in card
    # the train command's closing line too (a resumed run: the towers and the refit are checkpointed)
    printed = CliRunner().invoke(app, ["train", "--config", str(setup["config"]), "--dataset", str(setup["folder"]),
                                       "--out", str(result.run_dir), "--no-progress",
                                       *[arg for key in ("ease.weights=[1]", 'ease.kinds=["ease", "gf-cf"]',
                                                         "ease.gfcf_rank=32", "ease.max_items=2", "ease.min_gain_se=0",
                                                         "train.refit=true") for arg in ("--set", key)]])
    assert printed.exit_code == 0, printed.output
    assert "+ a closed-form GF-CF member (weight 1 chosen on valid, rank 288)" in printed.output
