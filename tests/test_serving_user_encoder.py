"""Serving encodes a history with the very module training ran, for every pooling the config allows.

A controlled case on purpose: a randomly initialised `TwoTower` on a small random graph, with its
weights randomised, so a pooling option, the propagation fold or the popularity coordinate that
serving got wrong shows up as a mismatch against the training forward pass itself. Request-sized
batches run a faster form of the module (an ONNX Runtime export by default, TorchScript traces, or
the module itself: `RECSYS_USER_TOWER_RUNTIME`); each is checked here against the module, and a
form that cannot be had or is not exact falls back to the next.
"""
from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from recsys.artifact import save_run
from recsys.config import Settings, get_settings
from recsys.models.config import ModelConfig
from recsys.models.ensemble import ENSEMBLE_KIND, concat_members, ensemble_payload, load_ensemble_encoder
from recsys.models.graph import InteractionGraph
from recsys.models.item_tower import ItemCatalog
from recsys.models.two_tower import GraphContext, TwoTower
from recsys.models.user_encoder import (REQUEST_BATCH, TRACED_BATCHES, ServedUserTower, TowerUserEncoder,
                                        distinct_latest, encoder_payload, history_tensors, load_user_encoder)
from recsys.models.user_tower import UserHistories
from serving.config import ServingSettings
from serving.main import create_app
from support.local_server import redis_url_of

N_ITEMS, N_USERS, DIM = 40, 12, 16
VARIANTS = [
    dict(user_pooling="mean", history_embedding=False),
    dict(user_pooling="mean", history_embedding=False, recency_half_life=3.0),
    dict(user_pooling="mean", history_embedding=True),
    dict(user_pooling="attention", history_embedding=False),
    dict(user_pooling="attention", history_embedding=True, recency_half_life=5.0),
    dict(user_pooling="self_attention", history_embedding=False, recency_half_life=3.0),
    dict(user_pooling="self_attention", history_embedding=True, attention_positions=8),
    dict(user_pooling="self_attention", history_embedding=False, recency_half_life=3.0, attention_heads=2,
         attention_inner=64, attention_activation="gelu", attention_weight_dropout=0.5),
    dict(user_pooling="self_attention", history_embedding=False, recency_half_life=3.0, attention_item_embedding=True),
    # LightGCN++'s propagation: layer 0 weighted apart, asymmetric degree exponents (a live history's length too)
    dict(user_pooling="mean", history_embedding=False, layer0_weight=0.0, graph_self_exponent=0.6,
         graph_neighbour_exponent=-0.1, graph_unit_layers=True),
    dict(user_pooling="attention", history_embedding=True, layer0_weight=0.4, graph_self_exponent=0.5,
         graph_neighbour_exponent=0.1),
]
MULTI_HEAD = dict(attention_heads=4, attention_inner=4 * DIM, attention_activation="gelu")
EXTRA = {"self_attention-multi-head": MULTI_HEAD, "self_attention-item-embedding": dict(attention_item_embedding=True),
         "mean-lightgcnpp": dict(layer0_weight=0.2, graph_self_exponent=0.6, graph_neighbour_exponent=-0.1,
                            graph_unit_layers=True)}


def _histories(seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.choice(N_ITEMS, size=int(rng.integers(1, 15)), replace=False).tolist() for _ in range(N_USERS)]


def _trained_like(seed: int, popularity: bool, layers: int, **config):
    """A TwoTower with random weights, its training forward output and its histories (= graph rows)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=DIM, propagation_layers=layers, item_knn=0, popularity_prior=popularity,
                      user_id_embedding=False, **config)
    rng = np.random.default_rng(seed)
    features = {"image": rng.normal(size=(N_ITEMS, 8)).astype(np.float32)}
    counts = rng.integers(0, 5, size=N_ITEMS)
    catalog = ItemCatalog.from_arrays(features, {"image": np.ones(N_ITEMS, bool)}, counts)
    model = TwoTower(cfg, N_ITEMS, N_USERS, {"image": 8}).eval()
    model.item_tower.fit_statistics(catalog)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
    histories = _histories(seed)
    users = np.repeat(np.arange(N_USERS), [len(h) for h in histories])
    graph = InteractionGraph.from_pairs(users, np.concatenate(histories), N_USERS, N_ITEMS, cfg.graph_self_exponent,
                                        cfg.graph_neighbour_exponent)
    graphs = GraphContext(graph if layers else None, None)
    with torch.no_grad():
        out = model(catalog, UserHistories.from_lists(histories), graphs)
    return cfg, model, out, graphs, histories


@pytest.mark.parametrize("layers", [0, 2])
@pytest.mark.parametrize("popularity", [False, True])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_served_tower_reproduces_the_training_user_vectors(variant: dict, popularity: bool, layers: int) -> None:
    cfg, model, out, graphs, histories = _trained_like(7, popularity, layers, **variant)
    encoder = load_user_encoder(encoder_payload(cfg, model, model.serving_tables(out, graphs)))
    expected = out.users.numpy()
    np.testing.assert_allclose(encoder.encode(histories), expected, atol=1e-5)  # batched (eager)
    for user, history in enumerate(histories):  # request-sized (the ONNX export, or traces, when exact)
        np.testing.assert_allclose(encoder.encode([history])[0], expected[user], atol=1e-5)


def _encoder(seed: int, pooling: str, runtime: str | None = None) -> tuple[TowerUserEncoder, np.ndarray, list[list[int]]]:
    """The served encoder of a random-weight tower (`pooling` of the history; `self_attention-multi-head`:
    self_attention with `MULTI_HEAD`; `self_attention-item-embedding`: with the blocks' own item table), its training user vectors and histories; `runtime`: forced, else the
    setting's default."""
    extra = EXTRA.get(pooling, {})
    cfg, model, out, graphs, histories = _trained_like(seed, True, 1, user_pooling=pooling.split("-")[0],
                                                       recency_half_life=3.0, history_embedding=False, **extra)
    served = ServedUserTower.from_payload(encoder_payload(cfg, model, model.serving_tables(out, graphs)))
    encoder = TowerUserEncoder(served, runtime=runtime) if runtime else load_user_encoder(served.payload())
    return encoder, out.users.numpy(), histories


@pytest.mark.parametrize("runtime", ["onnxruntime", "torchscript"])
@pytest.mark.parametrize("pooling", ["mean", "self_attention", "self_attention-multi-head"])
def test_small_batches_run_the_fast_runtime_and_equal_the_module_row_by_row(pooling: str, runtime: str) -> None:
    """The server batches concurrent feed misses (serving.batching): every batch size up to the
    largest, padded or not, gives each history the vector it gets from training and from the module alone."""
    encoder, expected, histories = _encoder(4, pooling, runtime)
    assert encoder.runtime == runtime and encoder.request_path is not None
    if runtime == "torchscript":
        assert sorted(encoder.request_path.traces) == list(TRACED_BATCHES), "every batch size must have its trace"
    for size in range(1, REQUEST_BATCH + 1):  # 3, 5, 6, 7: padded to the next trace; ONNX: any size
        rows = [(start + i) % N_USERS for start in range(0, N_USERS, size) for i in range(size)][:N_USERS]
        for start in range(0, len(rows), size):
            batch = rows[start:start + size]
            np.testing.assert_allclose(encoder.encode([histories[u] for u in batch]), expected[batch], atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "attention", "self_attention", "self_attention-multi-head",
                                     "self_attention-item-embedding", "mean-lightgcnpp"])
def test_onnx_export_equals_the_module_at_batch_1_2_4_8_and_any_history_length(pooling: str) -> None:
    """The default runtime is an ONNX Runtime session over an export of the loaded module: at each
    request batch size, for new users (empty), short, window-long and longer histories, mixed in one
    batch, its vectors are the eager module's to 1e-5."""
    encoder, _, _ = _encoder(6, pooling)
    assert encoder.runtime == "onnxruntime"
    rng = np.random.default_rng(0)
    for size in TRACED_BATCHES:
        for lengths in ([0] * size, [1] * size, [N_ITEMS] * size, rng.integers(0, N_ITEMS + 1, size=size).tolist(),
                        ([0, 3, N_ITEMS, 1, 9, 2, 17, 30] * 2)[:size]):
            histories = [rng.choice(N_ITEMS, size=n, replace=False).tolist() for n in lengths]
            with torch.inference_mode():
                module = encoder.module(*history_tensors(histories)).numpy()
                np.testing.assert_allclose(encoder.request_path(histories), module, atol=1e-5, rtol=0)
            np.testing.assert_allclose(encoder.encode(histories), module, atol=1e-5, rtol=0)


@pytest.mark.parametrize("setting", ["torchscript", "eager"])
def test_the_runtime_setting_is_followed(setting: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_USER_TOWER_RUNTIME", setting)
    get_settings.cache_clear()
    try:
        encoder, expected, histories = _encoder(3, "mean")
    finally:
        get_settings.cache_clear()
    assert encoder.runtime == setting
    assert (encoder.request_path is None) == (setting == "eager")
    for user, history in enumerate(histories):
        np.testing.assert_allclose(encoder.encode([history])[0], expected[user], atol=1e-5)


def test_without_onnxruntime_the_tower_falls_back_to_torchscript_with_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with caplog.at_level(logging.WARNING, logger="recsys.models.user_encoder"):
        encoder, expected, histories = _encoder(3, "mean", "onnxruntime")
    assert encoder.runtime == "torchscript"
    assert "onnxruntime not available (ModuleNotFoundError" in caplog.text
    np.testing.assert_allclose(encoder.encode(histories[:4]), expected[:4], atol=1e-5)


class IndexAddPool(nn.Module):
    """A tower whose ONNX export is wrong: the exporter's `index_add` keeps the entry count it was traced
    with (why the real towers sum segments with `scatter_add`). Its TorchScript trace is right."""

    n_items = N_ITEMS

    def __init__(self):
        super().__init__()
        self.register_buffer("table", torch.randn(N_ITEMS, DIM, generator=torch.Generator().manual_seed(0)))

    def forward(self, items, lengths, segment, age):  # noqa: ANN001, ANN201 - the served towers' signature
        pooled = torch.zeros(lengths.shape[0], DIM).index_add(0, segment, self.table.index_select(0, items))
        return nn.functional.normalize(pooled, dim=1)


def test_an_export_that_differs_from_the_module_is_refused_at_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="recsys.models.user_encoder"):
        encoder = TowerUserEncoder(IndexAddPool(), runtime="onnxruntime")
    assert encoder.runtime == "torchscript"
    assert "onnxruntime" in caplog.text and "trying the next runtime" in caplog.text
    histories = [[1, 2, 3, 4, 5], [7]]
    with torch.inference_mode():
        np.testing.assert_allclose(encoder.encode(histories), encoder.module(*history_tensors(histories)).numpy(), atol=1e-6)


def test_readyz_and_admin_model_report_the_runtime_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            isolated_settings: None, redis_server) -> None:
    cfg, model, out, graphs, histories = _trained_like(8, True, 1, user_pooling="mean", history_embedding=False)
    payload = encoder_payload(cfg, model, model.serving_tables(out, graphs))
    items = pl.DataFrame({"item_id": [str(i) for i in range(N_ITEMS)], "item_index": list(range(N_ITEMS)),
                          "media": [["image"]] * N_ITEMS, "popularity": [1.0] * N_ITEMS})
    users = pl.DataFrame({"user_id": [str(u) for u in range(N_USERS)], "user_index": list(range(N_USERS)),
                          "n_train": [len(h) for h in histories]})
    run = save_run(tmp_path / "run", model_version="runtime-test-1", dataset="runtime-test", data_version="v1",
                   config={"model": cfg.model_dump(mode="json")}, items=items, users=users,
                   item_vectors=out.items.numpy(), user_vectors=out.users.numpy(), user_encoder_payload=payload)
    shared = Settings(redis_url=redis_url_of(redis_server), redis_namespace="test-user-tower-runtime",
                      store_dir=tmp_path / "store")
    for setting in ("onnxruntime", "eager"):
        monkeypatch.setenv("RECSYS_USER_TOWER_RUNTIME", setting)
        get_settings.cache_clear()
        with TestClient(create_app(ServingSettings(run_dir=run, log_dir=tmp_path / "logs"), shared)) as client:
            ready = client.get("/readyz").json()
            assert [m["user_tower_runtime"] for m in ready["models"]] == [setting]
            assert [m["user_tower_runtime"] for m in client.get("/admin/model").json()] == [setting]


def test_payload_is_weights_only_and_round_trips() -> None:
    cfg, model, out, graphs, histories = _trained_like(5, True, 1, user_pooling="attention")
    payload = encoder_payload(cfg, model, model.serving_tables(out, graphs))
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # refuses anything but tensors and plain values
    np.testing.assert_allclose(load_user_encoder(loaded).encode(histories), out.users.numpy(), atol=1e-5)


def test_histories_are_cleaned_the_same_way_for_training_and_serving() -> None:
    assert distinct_latest([7, 7, 9, 7, 2], 10) == [9, 7, 2]
    assert distinct_latest([60, -1, 4], 10) == [4]
    assert distinct_latest([], 10) == []
    cfg, model, out, graphs, _ = _trained_like(1, False, 1)
    encoder = load_user_encoder(encoder_payload(cfg, model, model.serving_tables(out, graphs)))
    np.testing.assert_allclose(encoder.encode([[7, 7, 9, 7, 2, 99]]), encoder.encode([[9, 7, 2]]), atol=1e-6)


def test_ensemble_serves_the_concatenation_of_its_members() -> None:
    members = [_trained_like(seed, True, 1) for seed in (11, 12)]
    payloads = [encoder_payload(cfg, model, model.serving_tables(out, graphs)) for cfg, model, out, graphs, _ in members]
    weights = [1.3, 0.7]
    encoder = load_ensemble_encoder(ensemble_payload(payloads, weights))
    assert isinstance(encoder, TowerUserEncoder) and encoder.kind == ENSEMBLE_KIND
    histories = members[0][4]  # the same users' histories for both (member 1's graph differs: not exact there)
    parts = [load_user_encoder(p).encode(histories) for p in payloads]
    expected = concat_members(parts, weights)
    np.testing.assert_allclose(encoder.encode(histories), expected, atol=1e-5)
    np.testing.assert_allclose(encoder.encode([histories[2]])[0], expected[2], atol=1e-5)
