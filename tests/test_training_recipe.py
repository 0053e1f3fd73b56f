"""Where a training config comes from, the built-in robust recipe, and the learning-rate schedule.

A dataset without a config must train with a recipe sized from its data (not the plain defaults),
and the run must say which config it used.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.main import app
from recsys.artifact import load_run
from training.config import CONFIG_DIR, TrainConfig, load_config
from recsys.data import load_dataset
from training.recipe import (BATCH_MAX, DataShape, batch_for, data_shape, dense_dimension, dimension_for, members_for,
                             robust_recipe, window_for)
from training.trainer import scheduled_lr


def _folder(root: Path, n_users: int = 60, n_items: int = 40, per_user: int = 8) -> Path:
    """A generic folder dataset (items.csv + interactions.csv, no split column, real timestamps)."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{int(i)}", 1000 * u + t) for u in range(n_users)
            for t, i in enumerate(rng.choice(n_items, size=per_user, replace=False))]
    root.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"item_id": [f"i{i}" for i in range(n_items)]}).write_csv(root / "items.csv")
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row").write_csv(root / "interactions.csv")
    return root


def test_a_dataset_without_config_gets_the_robust_recipe_sized_from_its_data(tmp_path: Path):
    folder = _folder(tmp_path / "shop")
    config = load_config(None, str(folder))
    assert config.origin.startswith("built-in robust default recipe (60 users, 40 items")
    assert config.data.split == "leave-last-out"  # no split column: next-item protocol
    assert config.model.recency_half_life > 0 and config.train.select_metric == "ndcg@10"
    # next-item regime on a small catalogue: the sequence step with a causal self-attention tower, no graph
    assert config.loss.step == "sequence" and config.loss.kind == "full_softmax"
    assert config.model.user_pooling == "self_attention" and config.model.propagation_layers == 0
    assert config.train.lr_schedule == "constant" and config.train.patience >= 20 and config.train.epochs >= 100
    assert config.model.dim == 32 and config.loss.alignment_weight == 0 and config.model.item_knn == 0


def test_a_config_beside_the_dataset_folder_wins_over_the_recipe(tmp_path: Path):
    folder = _folder(tmp_path / "shop")
    (tmp_path / "shop.toml").write_text("[model]\ndim = 24\n[train]\nlr = 0.004\n")
    config = load_config(None, str(folder), ["train.epochs=2"])
    assert config.model.dim == 24 and config.train.lr == 0.004 and config.train.epochs == 2
    assert config.origin == f"dataset config {tmp_path / 'shop.toml'} (beside the dataset folder) + overrides train.epochs=2"
    explicit = tmp_path / "other.toml"
    explicit.write_text("[model]\ndim = 8\n")
    assert load_config(explicit, str(folder)).model.dim == 8


def test_registered_datasets_keep_their_repository_config():
    config = load_config(None, "ml-100k")
    assert config.origin == f"dataset config {CONFIG_DIR / 'ml-100k.toml'}"
    assert config.data.tie_break == "file-order"


@pytest.mark.parametrize("n_items, n_pairs, dim", [(1682, 80_000, 64), (6710, 59_541, 128), (40_000, 400_000, 256),
                                                   (7050, 20_000, 64), (40, 480, 32)])
def test_dimension_grows_with_the_catalogue_and_shrinks_for_sparse_items(n_items: int, n_pairs: int, dim: int):
    assert dimension_for(DataShape(1000, n_items, n_pairs, True, False, True)) == dim


def test_ensemble_members_follow_the_time_budget():
    small = DataShape(943, 1682, 80_000, True, False, True)
    assert members_for(small, 64) == 3
    assert members_for(DataShape(10**6, 10**5, 5 * 10**7, True, False, True), 256) == 1


def test_the_full_step_batch_grows_only_where_an_epoch_would_propagate_a_large_graph_hundreds_of_times():
    # every set measured before Gowalla keeps 2,048 (their figures stand): ML-1M (dense, dim 64, 3 layers),
    # Amazon-Sports and CiteULike (sparse, dim 256, 2 layers)
    for shape in (DataShape(6039, 3628, 590_733, True, False, True), DataShape(35_598, 18_357, 218_409, True, False, True),
                  DataShape(5551, 16_980, 151_895, True, False, True)):
        assert robust_recipe(shape)["train"]["batch_size"] == 2048
    gowalla = DataShape(29_858, 40_981, 719_081, True, False, True)
    assert robust_recipe(gowalla)["train"]["batch_size"] == 8192
    assert robust_recipe(gowalla)["loss"]["softmax_group"] == 2048  # one propagation carries four softmaxes
    # large data in the other regimes still makes a valid config: a dense set's exact-softmax members take no
    # groups, and the next-item regime's sequence step (targets, no graph) keeps its batch
    dense = robust_recipe(DataShape(70_000, 10_000, 8_000_000, True, False, True))
    assert dense["train"]["batch_size"] == BATCH_MAX and dense["train"]["member_overrides"][1]["loss.softmax_group"] == 0
    next_item = robust_recipe(DataShape(70_000, 10_000, 8_000_000, False, False, True))
    assert next_item["train"]["batch_size"] == 2048 and "softmax_group" not in next_item["loss"]
    for raw in (dense, next_item):
        config = TrainConfig.model_validate({**raw, "data": {**raw["data"], "dataset": "large"}})
        for k in range(2):
            config.member(k)
    assert batch_for(DataShape(31_668, 38_048, 1_237_259, True, False, True), 256, 2) == BATCH_MAX  # Yelp2018
    assert batch_for(DataShape(52_643, 91_599, 2_380_730, True, False, True), 256, 2) == 2048  # sampled step


def test_dense_random_split_data_sees_whole_histories_and_sparse_data_a_fixed_temperature():
    # Dense, predefined split: the window covers the 99th percentile of train histories (power of two).
    dense = DataShape(943, 1682, 80_000, True, False, True, history_p99=358)
    raw = robust_recipe(dense)
    assert raw["data"]["feature_window"] == 512 and raw["model"]["learn_temperature"] is True
    # Mixed members: even ones the sampled softmax + logQ, odd ones the exact softmax (a full config checks it).
    assert raw["loss"]["kind"] == "softmax" and raw["train"]["member_overrides"] == [{}, {"loss.kind": "full_softmax"}]
    assert TrainConfig.model_validate(raw).member(1).loss.kind == "full_softmax"
    assert TrainConfig.model_validate(raw).member(2).loss.kind == "softmax"
    # Past the exact softmax's catalogue size every member is sampled.
    big = robust_recipe(DataShape(10**5, 60_000, 10**8, True, False, True))  # density .017
    assert big["loss"]["kind"] == "softmax" and "member_overrides" not in big["train"]
    # Sparse, predefined split: the default window, a fixed temperature, sampled softmax with logQ x3.
    sparse = robust_recipe(DataShape(9308, 6710, 49_000, True, False, False, history_p99=283))
    assert "feature_window" not in sparse["data"] and sparse["model"]["learn_temperature"] is False
    assert sparse["loss"]["kind"] == "softmax" and sparse["loss"]["logq_correction"] == 3.0
    # A next-item task (no split column, real timestamps) is neither: learned temperature, default window.
    next_item = robust_recipe(DataShape(943, 1346, 12_000, False, False, True, history_p99=60))
    assert "feature_window" not in next_item["data"] and next_item["model"]["learn_temperature"] is True


def test_valid_decides_the_logq_strength_wherever_the_sampled_softmax_trains():
    """The pilot tries logQ x3 (as configured) and x1; the sequence step's full softmax has nothing to decide."""
    expected = [{}, {"loss.logq_correction": 1.0}]
    for shape in (DataShape(9308, 6710, 49_000, True, False, False),  # sparse
                  DataShape(943, 1682, 80_000, True, False, True),  # dense
                  DataShape(10**5, 60_000, 10**8, False, False, True)):  # next-item past the full softmax's size
        raw = robust_recipe(shape)
        assert raw["loss"]["kind"] == "softmax" and raw["loss"]["logq_correction"] == 3.0
        assert raw["train"]["pilot"] == expected
        assert TrainConfig.model_validate(raw).with_settings(expected[1]).loss.logq_correction == 1.0
    sequence = robust_recipe(DataShape(943, 1346, 12_000, False, False, True))
    assert sequence["loss"]["step"] == "sequence" and sequence["train"]["pilot"] == []
    robust_recipe(DataShape(9308, 6710, 49_000, True, False, False))["train"]["pilot"][1]["loss.logq_correction"] = 9.0
    assert robust_recipe(DataShape(9308, 6710, 49_000, True, False, False))["train"]["pilot"] == expected  # a copy


def test_dense_data_gets_no_wider_vectors_than_its_events_per_item():
    # The full random ML-100K split (48 train events per item) keeps the catalogue's 64; thinned to
    # 40 % (21 per item) it gets 16; sparse data keeps `dimension_for` whatever its events per item.
    assert robust_recipe(DataShape(943, 1682, 80_024, True, False, True))["model"]["dim"] == 64
    assert robust_recipe(DataShape(943, 1554, 31_996, True, False, True))["model"]["dim"] == 16
    assert robust_recipe(DataShape(9308, 6710, 49_000, True, False, False))["model"]["dim"] == 128
    assert dense_dimension(DataShape(100, 100, 500, True, False, True), 64) == 16  # never below 16


@pytest.mark.parametrize("p99, window", [(0, 50), (40, 50), (50, 50), (51, 64), (358, 512), (5000, 1024)])
def test_history_window_is_a_power_of_two_over_the_99th_percentile(p99: int, window: int):
    assert window_for(DataShape(100, 100, 10_000, True, False, True, history_p99=p99), 50) == window


def test_data_shape_reads_the_train_history_percentile(tmp_path: Path):
    shape = data_shape(load_dataset(str(_folder(tmp_path / "shop", per_user=10))))
    assert shape.history_p99 == 8  # 10 events per user, 80 % of them train (no split column)


def test_the_next_item_regime_uses_the_sequence_step_while_the_full_softmax_is_affordable():
    small = robust_recipe(DataShape(943, 1682, 97_000, False, False, True))
    assert small["loss"]["step"] == "sequence" and small["model"]["propagation_layers"] == 0
    assert small["train"]["ensemble"] == 1  # ~96k transitions x 60 epochs: one tower fills the CPU budget
    assert robust_recipe(DataShape(943, 1346, 12_233, False, False, True))["train"]["ensemble"] == 3
    huge = robust_recipe(DataShape(10**6, 10**5, 10**7, False, False, True))  # beyond the full softmax
    assert "step" not in huge["loss"] and huge["model"]["user_pooling"] == "mean"
    with_split = robust_recipe(DataShape(943, 1682, 97_000, True, False, True))
    assert "step" not in with_split["loss"] and with_split["model"]["user_pooling"] == "mean"


def test_lr_warms_up_then_decays_by_cosine_to_a_twentieth():
    lr = [scheduled_lr(0.01, "cosine", 1.0, 20, p) for p in (0.0, 0.5, 1.0, 10.5, 20.0)]
    assert lr[0] == pytest.approx(0.001) and lr[1] == pytest.approx(0.0055) and lr[2] == pytest.approx(0.01)
    assert lr[3] == pytest.approx(0.0005 + 0.0095 * 0.5) and lr[4] == pytest.approx(0.0005)
    assert scheduled_lr(0.01, "constant", 0.0, 20, 7.3) == 0.01


def test_recsys_train_says_which_config_it_used(tmp_path: Path):
    folder = _folder(tmp_path / "shop")
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", str(folder), "--out", str(run), "--no-progress",
                                      "--set", "train.epochs=3", "--set", "train.ensemble=1", "--set", "train.threads=1"])
    assert result.exit_code == 0, result.output
    assert "config: built-in robust default recipe (60 users, 40 items" in result.output
    stored = load_run(run).config
    assert stored["origin"].startswith("built-in robust default recipe") and stored["loss"]["step"] == "sequence"
    assert stored["train"]["lr_schedule"] == "constant"
    metrics = json.loads((run / "metrics.json").read_text())
    history = [h["lr"] for h in metrics["history"]]
    assert history == [history[0]] * 3  # the next-item regime trains at a constant lr (epoch chosen on valid)
    considered = metrics["closed_form"]  # the recipe tries the closed-form member at every weight, 0 included,
    tried = {key for key in considered["valid_by_weight"]}  # next-item half-lives, and both item forms
    grid = {"0"} | {f"{kind} {w:g}@{h:g}{form}" for kind in ("ease", "gf-cf") for w in (0.25, 0.5, 1.0)
                    for h in (0.0, 3.0, 10.0, 30.0) for form in ("", " lengths")}  # both closed-form kinds
    assert grid <= tried
    # beyond the grid only its winning end doubled (ease.extend_weights, 3 in the recipe), at one kind, half-life, form
    extra = tried - grid
    assert {key.split("@")[0].split()[-1] for key in extra} <= {"2", "4", "8"}
    assert len({key.split()[0] for key in extra}) <= 1 and len({key.split("@")[1] for key in extra}) <= 1


def test_recsys_tune_writes_a_config_the_next_train_uses(tmp_path: Path):
    folder = _folder(tmp_path / "shop")
    result = CliRunner().invoke(app, ["tune", "--dataset", str(folder), "--budget-minutes", "5", "--max-trials", "2",
                                      "--set", "train.epochs=2", "--set", "train.threads=1"])
    assert result.exit_code == 0, result.output
    assert "trial 0: valid ndcg@10" in result.output and "(base config)" in result.output
    assert "trial 1: valid ndcg@10" in result.output
    written = tmp_path / "shop.toml"
    text = written.read_text()
    assert text.startswith("# Written by `recsys tune`: best valid ndcg@10 of 2 one-tower trials")
    config = load_config(None, str(folder))
    assert config.origin == f"dataset config {written} (beside the dataset folder)"
    recipe = robust_recipe(data_shape(load_dataset(str(folder))))
    assert config.train.epochs == 2 and config.train.ensemble == recipe["train"]["ensemble"]  # trials: 1 tower each
    assert config.ease.weights == recipe["ease"]["weights"]  # trials leave the closed-form member out; the config keeps it


def test_tune_trials_never_read_test(tmp_path: Path, monkeypatch):
    """A search that chooses on valid must not compute (or log) the test figure of any trial; `recsys train` does."""
    import training.run as run_module
    import training.tune as tune_module

    folder = _folder(tmp_path / "shop")
    ranked: list[str] = []
    real = run_module.evaluate_vectors

    def recording(data, users, items, split, ctx, encoder):  # noqa: ANN001 - evaluate_vectors' signature
        ranked.append(split)
        return real(data, users, items, split, ctx, encoder)

    monkeypatch.setattr(run_module, "evaluate_vectors", recording)
    tune_module.tune(str(folder), budget_minutes=5, max_trials=1, out=tmp_path / "shop.tuned.toml",
                     overrides=["train.epochs=1", "train.threads=1", "train.pilot=[]"])
    assert ranked and set(ranked) == {"valid"}
    ranked.clear()
    result = run_module.train(load_config(None, str(folder), ["train.epochs=1", "train.threads=1", "train.ensemble=1"]),
                              tmp_path / "run", progress=False)
    assert set(ranked) == {"valid", "test"} and result.metrics["test"]


def test_tune_lets_the_base_pilot_decide_once_and_varies_what_it_decided(tmp_path: Path, monkeypatch):
    """Trial 0 runs the recipe's pilot; later trials and the written config start from its choice, pilot-free."""
    import training.tune as tune_module

    folder = tmp_path / "shop"
    _folder(folder)
    seen: list[tuple[list, float, float]] = []

    class Result:
        def __init__(self, metrics: dict):
            self.metrics, self.best_epoch = metrics, 1

    def fake_train(config, out, **kwargs):  # noqa: ANN001, ANN003 - train()'s signature
        seen.append((config.train.pilot, config.loss.logq_correction, config.train.lr))
        metrics = {"valid": {"ndcg@20": 0.2}}
        if config.train.pilot:  # the pilot chose its second candidate
            metrics["pilot"] = {"metric": "ndcg@20", "candidates": [], "chosen": 1}
        return Result(metrics)

    monkeypatch.setattr(tune_module, "train", fake_train)
    monkeypatch.setattr(tune_module, "search_space", lambda base: {"train.lr": [0.5]})
    # a split column: the recipe's pair regimes (here the dense one), whose pilot decides the logQ strength
    interactions = pl.read_csv(folder / "interactions.csv")
    split = np.where(np.arange(interactions.height) % 8 == 7, "test", np.where(np.arange(interactions.height) % 8 == 6,
                                                                               "valid", "train"))
    interactions.with_columns(pl.Series("split", split)).write_csv(folder / "interactions.csv")
    result = tune_module.tune(str(folder), budget_minutes=5, max_trials=2, overrides=["train.epochs=1"])
    assert seen[0][0] == [{}, {"loss.logq_correction": 1.0}]  # trial 0: the base, with its pilot
    assert seen[1] == ([], 1.0, 0.5)  # trial 1: lr 0.5 on the base as its pilot decided it
    assert result.best.train.pilot == [] and result.best.loss.logq_correction == 1.0


def test_tune_search_space_overrides_are_valid_config_values():
    import random

    from training.config import TrainConfig, apply_overrides
    from training.tune import sample_overrides, search_space

    base = TrainConfig()
    space = search_space(base)
    assert space["model.learn_temperature"] == [True, False] and 3.0 in space["loss.logq_correction"]
    rng = random.Random(0)
    for _ in range(20):
        changes = sample_overrides(space, rng, knobs=len(space))
        config = TrainConfig.model_validate(apply_overrides(base.model_dump(mode="json", exclude={"origin"}), changes))
        assert isinstance(config.model.learn_temperature, bool)


def test_tune_never_trains_the_same_config_twice():
    """A draw that sets knobs to values already trained (the base's own value, or an earlier draw) is re-drawn."""
    import random

    from training.config import TrainConfig
    from training.tune import config_key, search_space, untried_overrides

    base_raw = TrainConfig().model_dump(mode="json", exclude={"origin"})
    space = {"train.lr": [base_raw["train"]["lr"], 0.5], "model.dim": [base_raw["model"]["dim"]]}
    tried = {config_key(base_raw)}
    rng = random.Random(0)
    drawn = untried_overrides(space, rng, base_raw, tried)
    assert drawn is not None and "train.lr=0.5" in drawn[0] and drawn[1]["train"]["lr"] == 0.5
    tried.add(config_key(drawn[1]))
    assert untried_overrides(space, rng, base_raw, tried, attempts=50) is None  # both configs of this space trained
    assert search_space(TrainConfig())  # the real space is not empty


def test_tune_confirms_a_challenger_with_a_second_seed(tmp_path: Path, monkeypatch):
    """The written config is the base unless the best challenger also leads on the mean of two seeds."""
    import training.tune as tune_module

    folder = _folder(tmp_path / "shop")
    calls: list[tuple[float, int]] = []

    class Result:
        def __init__(self, valid: float):
            self.metrics, self.best_epoch = {"valid": {"ndcg@10": valid}}, 1

    def fake_train(config, out, **kwargs):  # noqa: ANN001, ANN003 - train()'s signature
        # the challenger (lr 0.5) leads with the base's seed and loses with the next one
        lucky = config.train.lr == 0.5
        valid = (0.30 if config.train.seed == 0 else 0.10) if lucky else 0.20
        calls.append((config.train.lr, config.train.seed))
        return Result(valid)

    monkeypatch.setattr(tune_module, "train", fake_train)
    monkeypatch.setattr(tune_module, "search_space", lambda base: {"train.lr": [0.5]})
    result = tune_module.tune(str(folder), budget_minutes=5, max_trials=2, overrides=["train.epochs=1"])
    assert [t.overrides for t in result.trials] == [[], ["train.lr=0.5"]]
    assert result.confirmation is not None and not result.confirmation.won
    assert calls[2:] == [(result.best.train.lr, 1), (0.5, 1)]  # base and challenger again, seed 1
    assert result.best.train.lr != 0.5  # the base is written
    assert "the base is kept" in result.written.read_text()


def test_tune_keeps_the_base_when_the_challenger_leads_by_less_than_the_margin(tmp_path: Path, monkeypatch):
    """A challenger ahead on both seeds but by less than `MIN_RELATIVE_GAIN` of the base's mean is a tie: the base
    is written; ahead by more, the challenger is."""
    import training.tune as tune_module

    class Result:
        def __init__(self, valid: float):
            self.metrics, self.best_epoch = {"valid": {"ndcg@10": valid}}, 1

    for lead, kept in ((0.5 * tune_module.MIN_RELATIVE_GAIN, False), (2 * tune_module.MIN_RELATIVE_GAIN, True)):
        folder = _folder(tmp_path / f"shop-{kept}")

        def fake_train(config, out, lead=lead, **kwargs):  # noqa: ANN001, ANN003 - train()'s signature
            return Result(0.20 * (1 + lead) if config.train.lr == 0.5 else 0.20)

        monkeypatch.setattr(tune_module, "train", fake_train)
        monkeypatch.setattr(tune_module, "search_space", lambda base: {"train.lr": [0.5]})
        result = tune_module.tune(str(folder), budget_minutes=5, max_trials=2, overrides=["train.epochs=1"])
        assert result.confirmation is not None and result.confirmation.won is kept
        assert (result.best.train.lr == 0.5) is kept
        assert ("must lead its mean by more than 1%" in result.written.read_text()) is not kept


def test_tune_skips_draws_that_break_a_config_rule():
    """TikTok's config sets the reverse in-batch softmax, which `loss.kind = "full_softmax"` refuses: a draw of that
    kind is skipped like a repeat (it used to end the search with a validation error, its trials lost)."""
    import random

    from training.config import TrainConfig
    from training.tune import config_key, untried_overrides

    base_raw = TrainConfig().model_dump(mode="json", exclude={"origin"})
    base_raw["loss"]["reverse_weight"] = 0.3
    space = {"loss.kind": ["full_softmax", "softmax"], "train.lr": [0.5]}
    rng = random.Random(0)
    tried = {config_key(base_raw)}
    for _ in range(5):
        drawn = untried_overrides(space, rng, base_raw, tried)
        assert drawn is not None and drawn[1]["loss"]["kind"] == "softmax" and drawn[1]["train"]["lr"] == 0.5
    tried.add(config_key(drawn[1]))
    assert untried_overrides(space, rng, base_raw, tried, attempts=50) is None  # the only valid new config is tried
