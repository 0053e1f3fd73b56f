"""The served user tower: the trained `UserTower` module itself, with the graph folded into per-item tables.

Why no serving copy: a hand-written twin of the tower (numpy, kept equal by a test) is a second
implementation that drifts; TorchRec's retrieval example serves from the same module's state dict
training produced. Here `ServedUserTower` *contains* the training `UserTower` (same class, same
state dict) plus the buffers that turn a history into the propagated user vector
(`TwoTower.serving_tables`) and the popularity head. `user_encoder.pt` holds tensors and plain
values only (a config dict and state dicts: `torch.load(..., weights_only=True)` reads it), so a
run directory executes no code.

Request-sized encodes (one history, or the few histories of concurrent feed misses that the server
batches: `TRACED_BATCHES`) run TorchScript traces of that same module (recorded from it at load,
one per batch size, and checked against it), because eager dispatch of a dozen tiny ops per
history was the largest cost of a feed cache miss; larger batches run the module eagerly.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from recsys.artifact import USER_ENCODER_LOADERS, RunArtifact
from recsys.models.config import ModelConfig
from recsys.models.popularity_prior import PopularityCoordinate
from recsys.models.two_tower import ServingTables, TwoTower
from recsys.models.user_tower import UserHistories, UserTower

log = logging.getLogger(__name__)

ENCODER_KIND = "two_tower_graph"
TRACE_TOLERANCE = 1e-5
# Batch sizes with a trace of their own (a trace fixes the number of users); a batch in between is
# padded to the next size. The server coalesces concurrent feed misses into such batches: one call
# of a batch of 4 costs about what 1.3 single calls do (the per-op dispatch is per call, not per user).
TRACED_BATCHES = (1, 2, 4, 8)


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

    user = finalise(scale · UserTower(h over `item_inputs`) + |h|^-1/2 · Σ_{i∈h} `propagated`[i]),
    exactly `TwoTower.forward`'s user vector when h is the user's row of the training graph.

    Args:
        config: the member's model config; n_items: catalogue size; layer_scale: 1 / (L + 1).
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
        spread = torch.zeros_like(users).index_add(0, segment, self.propagated.index_select(0, items))
        users = users + spread / lengths.clamp(min=1).to(users.dtype).sqrt().unsqueeze(1)
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

    Args:
        module: maps `history_tensors` to unit user vectors (`ServedUserTower`, `MemberConcat`).
        kind: the payload kind it was loaded from.
    """

    def __init__(self, module: nn.Module, kind: str = ENCODER_KIND):
        self.module, self.kind = module.eval(), kind
        self.n_items = int(module.n_items)
        self.single = _trace(self.module, 1)
        # the other batch sizes only when the single trace held (same module, same ops)
        self.traced = {1: self.single} if self.single is not None else {}
        for size in TRACED_BATCHES[1:] if self.single is not None else ():
            traced = _trace(self.module, size)
            if traced is None:
                break
            self.traced[size] = traced

    def clean(self, history: list[int]) -> list[int]:
        return distinct_latest(history, self.n_items)

    def encode(self, histories: list[list[int]], timestamps: list[list[float]] | None = None) -> np.ndarray:
        """Unit user vectors of item-index histories (oldest first); duplicates and unknown items dropped."""
        cleaned = [self.clean(h) for h in histories]
        with torch.inference_mode():
            size = next((s for s in self.traced if s >= len(cleaned)), None)
            if size is not None and cleaned and all(cleaned):
                padded = cleaned + [cleaned[-1]] * (size - len(cleaned))  # pad rows are computed and dropped
                return self.traced[size](*history_tensors(padded))[:len(cleaned)].numpy()
            return self.module(*history_tensors(cleaned)).numpy()


def _trace(module: nn.Module, batch: int) -> torch.jit.ScriptModule | None:
    """A TorchScript trace of `module` for `batch` non-empty histories, or None when it is not exact.

    The trace records the module's own ops (no rewrite); it is checked against eager calls at a
    few history lengths, and a module it cannot follow (e.g. TorchRec's KeyedJaggedTensor in the
    history-embedding option) keeps the eager path.
    """
    rng = np.random.default_rng(batch)
    n = module.n_items

    def histories(*sizes: int) -> tuple[torch.Tensor, ...]:
        return history_tensors([rng.choice(n, size=min(n, s), replace=False).tolist() for s in sizes])

    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, histories(*[7 + i for i in range(batch)]), check_trace=False)
            traced = torch.jit.freeze(traced.eval())
            checks = [(1,) * batch, (2,) * batch, (50,) * batch, tuple((1, 50, 2, 13)[i % 4] for i in range(batch))]
            for sizes in checks:
                inputs = histories(*sizes)
                if not torch.allclose(traced(*inputs), module(*inputs), atol=TRACE_TOLERANCE, rtol=0):
                    log.warning("traced user tower (batch %d) differs from the module at history lengths %s; "
                                "using eager", batch, sizes)
                    return None
    except Exception as err:  # noqa: BLE001 - any tracing failure just keeps the eager module
        log.info("user tower not traceable at batch %d (%s: %s); such batches run eagerly", batch,
                 type(err).__name__, err)
        return None
    return traced


def encoder_payload(config: ModelConfig, model: TwoTower, tables: ServingTables) -> dict[str, Any]:
    """What `user_encoder.pt` holds for this model kind (loadable without the dataset or any code)."""
    return ServedUserTower.from_model(config, model, tables).payload()


def load_user_encoder(payload: dict[str, Any], run: RunArtifact | None = None) -> TowerUserEncoder:
    return TowerUserEncoder(ServedUserTower.from_payload(payload))


USER_ENCODER_LOADERS[ENCODER_KIND] = load_user_encoder
