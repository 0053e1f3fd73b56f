"""The served user tower: the trained `UserTower` module itself, with the graph folded into per-item tables.

Why no serving copy: a hand-written twin of the tower (numpy, kept equal by a test) is a second
implementation that drifts; TorchRec's retrieval example serves from the same module's state dict
training produced. Here `ServedUserTower` *contains* the training `UserTower` (same class, same
state dict) plus the buffers that turn a history into the propagated user vector
(`TwoTower.serving_tables`) and the popularity head. `user_encoder.pt` holds tensors and plain
values only (a config dict and state dicts: `torch.load(..., weights_only=True)` reads it), so a
run directory executes no code.

Request-sized encodes (one history, or the few histories of concurrent feed misses that the server
batches: up to `REQUEST_BATCH`) run a faster form of that same module, made from it at load and
checked against it: an ONNX Runtime export (`recsys.models.onnx_tower`, the default) or TorchScript
traces, one per batch size (setting `RECSYS_USER_TOWER_RUNTIME`), because eager dispatch of a dozen
tiny ops per history was the largest cost of a feed cache miss; larger batches run the module eagerly.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from recsys.artifact import USER_ENCODER_LOADERS, RunArtifact
from recsys.config import RUNTIMES, UserTowerRuntime, get_settings
from recsys.models.config import ModelConfig
from recsys.models.graph import degree_divisor
from recsys.models.onnx_tower import OnnxTower
from recsys.models.popularity_prior import PopularityCoordinate
from recsys.models.two_tower import ServingTables, TwoTower
from recsys.models.user_tower import UserHistories, UserTower, segment_sum

log = logging.getLogger(__name__)

ENCODER_KIND = "two_tower_graph"
# Batch sizes with a TorchScript trace of their own (a trace fixes the number of users); a batch in
# between is padded to the next size. The server coalesces concurrent feed misses into batches of at
# most `REQUEST_BATCH`: one call of a batch of 4 costs about what 1.3 single calls do (the per-op
# dispatch is per call, not per user). The ONNX export has a dynamic batch: one session for all sizes.
TRACED_BATCHES = (1, 2, 4, 8)
REQUEST_BATCH = max(TRACED_BATCHES)
# A faster form serves only if it gives the module's vectors on histories of these lengths (0: a new user;
# 200: past the feature window and the online history's cap), alone and mixed, at every batch size.
CHECK_LENGTHS = (0, 1, 2, 13, 50, 200)
CHECK_TOLERANCE = 1e-5


def distinct_latest(history: list[int], n_items: int) -> list[int]:
    """A history as the user tower sees it: each known item once, at its latest position, oldest first.

    Training applies it to the feature store's window (training/data.py) and serving to the
    online store's list, so both feed the tower the same input. Unknown indices are dropped.
    """
    seen: set[int] = set()
    out = []
    for item in reversed(history):
        item = int(item)
        if 0 <= item < n_items and item not in seen:
            seen.add(item)
            out.append(item)
    return out[::-1]


class ServedUserTower(nn.Module):
    """History -> served user vector: the trained `UserTower` + folded propagation + popularity coordinate.

    user = finalise(scale · UserTower(h over `item_inputs`) + |h|^-a · Σ_{i∈h} `propagated`[i]),
    a = `model.graph_self_exponent` (LightGCN's 1/2),
    exactly `TwoTower.forward`'s user vector when h is the user's row of the training graph.

    Args:
        config: the member's model config; n_items: catalogue size; layer_scale: layer 0's weight (the mean: 1 / (L + 1)).
    Example::
        tower = ServedUserTower.from_model(model, tables); users = tower(*history_tensors([[3, 7]]))
    """

    def __init__(self, config: ModelConfig, n_items: int, layer_scale: float):
        super().__init__()
        self.config = config.model_copy(update={"user_id_embedding": False})  # a live user is their history
        self.tower = UserTower(self.config, n_items)
        self.register_buffer("item_inputs", torch.zeros(n_items, config.dim))
        self.register_buffer("propagated", torch.zeros(n_items, config.dim))
        self.layer_scale = float(layer_scale)
        self.popularity = PopularityCoordinate(config.dim) if config.popularity_prior else None

    @property
    def n_items(self) -> int:
        return int(self.item_inputs.shape[0])

    @property
    def output_dim(self) -> int:
        return self.config.dim + (1 if self.popularity is not None else 0)

    @classmethod
    def from_model(cls, config: ModelConfig, model: TwoTower, tables: ServingTables) -> "ServedUserTower":
        """The served form of a trained model: its own tower and popularity weights, plus `tables`."""
        served = cls(config.model_copy(update={"popularity_prior": model.popularity is not None}),
                     tables.item_inputs.shape[0], tables.layer_scale)
        state = {k: v for k, v in model.user_tower.state_dict().items() if not k.startswith("user_embedding.")}
        served.tower.load_state_dict(state)
        if model.popularity is not None:
            served.popularity.load_state_dict(model.popularity.state_dict())
        served.item_inputs.copy_(torch.as_tensor(tables.item_inputs))
        served.propagated.copy_(torch.as_tensor(tables.propagated))
        return served.eval()

    def forward(self, items: torch.Tensor, lengths: torch.Tensor, segment: torch.Tensor,
                age: torch.Tensor) -> torch.Tensor:
        """(n_users, output_dim) unit user vectors of jagged histories (see `UserHistories`)."""
        histories = UserHistories(items, lengths, segment, age)
        users = self.layer_scale * self.tower(histories, self.item_inputs)
        spread = segment_sum(self.propagated.index_select(0, items), segment, histories.n_users)
        divisor = degree_divisor(lengths.clamp(min=1).to(users.dtype), self.config.graph_self_exponent)
        users = users + spread / divisor.unsqueeze(1)
        unit = nn.functional.normalize(users, dim=1)
        return self.popularity.users(unit) if self.popularity is not None else unit

    def payload(self) -> dict[str, Any]:
        """What `user_encoder.pt` holds: tensors and plain values only."""
        return {"kind": ENCODER_KIND, "config": self.config.model_dump(mode="json"), "layer_scale": self.layer_scale,
                "n_items": self.n_items, "state": {k: v.detach().clone() for k, v in self.state_dict().items()}}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "ServedUserTower":
        served = cls(ModelConfig(**payload["config"]), int(payload["n_items"]), float(payload["layer_scale"]))
        served.load_state_dict(payload["state"])
        return served.eval()


def history_tensors(histories: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(items, lengths, segment, age) of cleaned histories: the tower's jagged input."""
    batch = UserHistories.from_lists(histories)
    return batch.items, batch.lengths, batch.segment, batch.age


class TowerUserEncoder:
    """`UserEncoder` over a served tower module (one member, or an ensemble of them).

    Request-sized batches (1 to `REQUEST_BATCH` histories: a feed miss, or the misses the server
    batches together) run the faster form of the same module that `runtime` names, larger ones the
    module eagerly. The runtime actually used is `self.runtime`: the one asked for, or the next in
    `RUNTIMES` when it cannot be had (onnxruntime missing, an export or trace that fails, or one that
    differs from the module on the check histories), with a logged warning.

    Args:
        module: maps `history_tensors` to unit user vectors (`ServedUserTower`, `MemberConcat`).
        kind: the payload kind it was loaded from.
        runtime: "onnxruntime", "torchscript" or "eager"; default the setting `RECSYS_USER_TOWER_RUNTIME`.
    """

    def __init__(self, module: nn.Module, kind: str = ENCODER_KIND, runtime: UserTowerRuntime | None = None):
        self.module, self.kind = module.eval(), kind
        self.n_items = int(module.n_items)
        self.runtime, self.request_path = _request_path(self.module, runtime or get_settings().user_tower_runtime)

    def clean(self, history: list[int]) -> list[int]:
        return distinct_latest(history, self.n_items)

    def encode(self, histories: list[list[int]], timestamps: list[list[float]] | None = None) -> np.ndarray:
        """Unit user vectors of item-index histories (oldest first); duplicates and unknown items dropped."""
        cleaned = [self.clean(h) for h in histories]
        with torch.inference_mode():
            if self.request_path is not None and 0 < len(cleaned) <= REQUEST_BATCH:
                return self.request_path(cleaned)
            return self.module(*history_tensors(cleaned)).numpy()


class TracedBatches:
    """TorchScript traces of the module, one per batch size in `TRACED_BATCHES` (a trace fixes the
    number of users); a batch in between is padded to the next size, pad rows computed and dropped.
    A batch with an empty history runs the module (the traces are recorded on non-empty ones)."""

    def __init__(self, module: nn.Module, traces: dict[int, torch.jit.ScriptModule]):
        self.module, self.traces = module, traces

    def __call__(self, cleaned: list[list[int]]) -> np.ndarray:
        size = next((s for s in self.traces if s >= len(cleaned)), None)
        if size is None or not all(cleaned):
            return self.module(*history_tensors(cleaned)).numpy()
        padded = cleaned + [cleaned[-1]] * (size - len(cleaned))
        return self.traces[size](*history_tensors(padded))[:len(cleaned)].numpy()


def _request_path(module: nn.Module, wanted: UserTowerRuntime) -> tuple[str, Callable[[list[list[int]]], np.ndarray] | None]:
    """(runtime used, its encode of cleaned histories); ("eager", None) when only the module is left."""
    for runtime in RUNTIMES[RUNTIMES.index(wanted):]:
        if runtime == "eager":
            return runtime, None
        try:
            path = _onnx_path(module) if runtime == "onnxruntime" else TracedBatches(module, _traces(module))
            mismatch = _first_mismatch(path, module)
        except Exception as err:  # noqa: BLE001 - any export, trace, session or run failure: the next runtime
            log.warning("user tower: %s not available (%s: %s); trying the next runtime", runtime, type(err).__name__,
                        str(err).splitlines()[0] if str(err) else "")
            continue
        if mismatch is None:
            return runtime, path
        log.warning("user tower: %s differs from the module by more than %g at history lengths %s; trying the next "
                    "runtime", runtime, CHECK_TOLERANCE, mismatch)
    raise AssertionError("unreachable: eager is the last runtime")


def _onnx_path(module: nn.Module) -> Callable[[list[list[int]]], np.ndarray]:
    tower = OnnxTower(module, history_tensors(_random_histories(module.n_items, (7, 3), np.random.default_rng(0))))

    def encode(cleaned: list[list[int]]) -> np.ndarray:
        # a batch of new users only (no entry at all) runs the module: ONNX Runtime 1.23 returns a stale
        # buffer for a product over 0 entries, or refuses it (the check's all-empty batches caught both)
        return tower(*history_tensors(cleaned)) if any(cleaned) else module(*history_tensors(cleaned)).numpy()

    return encode


def _traces(module: nn.Module) -> dict[int, torch.jit.ScriptModule]:
    """A frozen TorchScript trace of the module's own ops per batch size (no rewrite)."""
    rng = np.random.default_rng(0)
    traces = {}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for size in TRACED_BATCHES:
            example = history_tensors(_random_histories(module.n_items, [7 + i for i in range(size)], rng))
            traces[size] = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False).eval())
    return traces


def _random_histories(n_items: int, lengths, rng: np.random.Generator) -> list[list[int]]:
    return [rng.choice(n_items, size=min(n_items, length), replace=False).tolist() for length in lengths]


def _first_mismatch(path: Callable[[list[list[int]]], np.ndarray], module: nn.Module) -> tuple[int, ...] | None:
    """The first batch of `CHECK_LENGTHS` histories (every request batch size, each length alone and all
    mixed) where `path` and the module differ by more than `CHECK_TOLERANCE`; None when they agree."""
    rng = np.random.default_rng(1)
    for size in TRACED_BATCHES:
        for lengths in [(length,) * size for length in CHECK_LENGTHS] + [np.resize(CHECK_LENGTHS, size)]:
            histories = _random_histories(module.n_items, lengths, rng)
            with torch.inference_mode():
                expected = module(*history_tensors(histories)).numpy()
                got = path(histories)
            if got.shape != expected.shape or not np.allclose(got, expected, atol=CHECK_TOLERANCE, rtol=0):
                return tuple(int(length) for length in lengths)
    return None


def encoder_payload(config: ModelConfig, model: TwoTower, tables: ServingTables) -> dict[str, Any]:
    """What `user_encoder.pt` holds for this model kind (loadable without the dataset or any code)."""
    return ServedUserTower.from_model(config, model, tables).payload()


def load_user_encoder(payload: dict[str, Any], run: RunArtifact | None = None) -> TowerUserEncoder:
    return TowerUserEncoder(ServedUserTower.from_payload(payload))


USER_ENCODER_LOADERS[ENCODER_KIND] = load_user_encoder
