"""The two-tower model: item tower and user tower, smoothed over frozen graphs, scored by a dot product.

Serving stays a two-tower: everything graph-related is linear and precomputed into per-item tables
(`ServingTables`), so a user vector is a function of the user's history alone and a score is
`user · item / temperature` over L2-normalised vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recsys.models.config import ModelConfig
from recsys.models.graph import FrozenSparse, InteractionGraph, Neighbours, degree_divisor, layer_weights, propagate, \
    propagation_layers, sample_neighbours
from recsys.models.item_tower import ItemCatalog, ItemEncoding, ItemTower
from recsys.models.popularity_prior import PopularityCoordinate
from recsys.models.user_tower import UserHistories, UserTower


@dataclass
class GraphContext:
    """Frozen graphs built from train data only (None = that lever is off)."""

    interactions: InteractionGraph | None = None
    item_knn: FrozenSparse | None = None  # (n_items, n_items), symmetric


@dataclass
class TowerOutput:
    users: torch.Tensor  # (n_users, output_dim) L2-normalised
    items: torch.Tensor  # (n_items, output_dim) L2-normalised
    item_encoding: ItemEncoding
    item_inputs: torch.Tensor  # (n_items, dim) layer-0 item vectors (what histories are pooled from)
    item_layers: list[torch.Tensor]  # propagation layers 0..L of the items


@dataclass
class LayerCache:
    """Historical embeddings for the sampled training step (GNNAutoScale, Fey et al. 2021) used as
    control variates (VR-GCN, Chen et al. 2018).

    One full no-grad pass, refreshed once per epoch, gives every user's and item's layer 0 and its
    exact propagation term Σ_{k=1..L} layer k. A sampled step then computes a user's vector as
    fresh layer 0 + cached propagation + Σ over sampled neighbours of (fresh − cached) neighbour
    layer 0: exact in value while the weights equal the cached ones (whatever the fan-out), an
    unbiased estimate of the change since, and the path the gradient takes to the neighbours.
    """

    users0: torch.Tensor  # (n_users, dim) layer 0
    items0: torch.Tensor  # (n_items, dim) layer 0
    users_propagated: torch.Tensor  # (n_users, dim) Σ_{k=1..L} user layer k
    items_propagated: torch.Tensor  # (n_items, dim) Σ_{k=1..L} item layer k


@dataclass
class StepSample:
    """What one sampled step encodes: global ids of its users, candidates and all items it reads.

    Attributes:
        users: (U,) unique batch users; pooled: (P,) sorted users whose histories the step pools (the
        batch users, plus the candidates' sampled neighbours when their layer 0 is recomputed);
        histories: the history windows of `pooled` (global item ids).
        candidates: (C,) unique items scored by the loss; encode: (N,) sorted unique items whose
        layer-0 vectors are computed (candidates, history items, the users' sampled graph neighbours,
        alignment items). user_neighbours: sampled graph rows of `users` (nodes = items);
        item_neighbours: sampled graph rows of `candidates` (nodes = users), only with `item_fanout`.
    """

    users: torch.Tensor
    pooled: torch.Tensor
    histories: UserHistories
    candidates: torch.Tensor
    encode: torch.Tensor
    user_neighbours: Neighbours | None = None
    item_neighbours: Neighbours | None = None
    fresh_item_layer: bool = False  # correct the candidates' cached propagation with their users' fresh layer 0


@dataclass
class StepOutput:
    """Vectors of a sampled step: served-space users and candidates, and the encoded items' tower output."""

    users: torch.Tensor  # (U,) rows of sample.users, L2-normalised (+ popularity coordinate)
    items: torch.Tensor  # (C,) rows of sample.candidates, likewise
    pooled0: torch.Tensor  # (P, dim) layer-0 vectors of sample.pooled
    encoding: ItemEncoding  # rows = `encoded`
    encoded: torch.Tensor  # sorted global ids of the encoding's rows (⊇ sample.encode)

    def rows(self, items: torch.Tensor) -> torch.Tensor:
        """Rows of `encoding` holding global items `items`."""
        return torch.searchsorted(self.encoded, items)


@dataclass
class ServingTables:
    """Per-item tables that turn a live history into the same user vector training produced.

    user = normalise(layer_scale · UserTower(history over `item_inputs`) + |h|^-a · Σ_{i∈h} `propagated`[i])
    (a = `model.graph_self_exponent`, LightGCN's 1/2).
    """

    item_inputs: np.ndarray  # (n_items, dim)
    propagated: np.ndarray  # (n_items, dim): Σ_{k<L} item layer k / degree^b, times the weight of a layer k >= 1
    layer_scale: float  # the weight of layer 0 (LightGCN's layer mean: 1 / (L + 1)), applied to the user tower term


class TwoTower(nn.Module):
    """User and item towers over shared item vectors, LightGCN propagation and content kNN smoothing.

    Args:
        config: model config; n_items, n_users: catalogue and user counts; media_dims: medium -> input width.
    Example::
        out = TwoTower(ModelConfig(), 6710, 9308, {"image": 128, "audio": 128})(catalog, histories, graphs)
        scores = out.users @ out.items.T / model.temperature
    """

    def __init__(self, config: ModelConfig, n_items: int, n_users: int, media_dims: dict[str, int]):
        super().__init__()
        self.config = config
        self.item_tower = ItemTower(config, n_items, media_dims)
        self.user_tower = UserTower(config, n_items, n_users)
        log_t = torch.tensor(float(np.log(config.temperature)))
        if config.learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)
        self.popularity = PopularityCoordinate(config.dim) if config.popularity_prior else None

    @property
    def output_dim(self) -> int:
        return self.config.dim + (1 if self.popularity is not None else 0)

    def finalise_users(self, users: torch.Tensor) -> torch.Tensor:
        """Raw (propagated) user vectors -> the served unit vectors (shared with the serving encoder)."""
        unit = nn.functional.normalize(users, dim=1)
        return self.popularity.users(unit) if self.popularity is not None else unit

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp().clamp(min=0.01)

    def item_inputs(self, encoding: ItemEncoding, graphs: GraphContext) -> torch.Tensor:
        """Layer-0 item vectors: item tower output plus its content-kNN smoothing (cold items borrow here)."""
        x = encoding.base
        if graphs.item_knn is not None and self.config.item_knn > 0:
            x = x + self.config.item_knn_weight * (graphs.item_knn @ x)
        return x

    def forward(self, catalog: ItemCatalog, histories: UserHistories, graphs: GraphContext,
                generator: torch.Generator | None = None, user_ids: torch.Tensor | None = None) -> TowerOutput:
        self.check_graph(graphs)
        encoding = self.item_tower(catalog, generator)
        items0 = self.item_inputs(encoding, graphs)
        users0 = self.user_tower(histories, items0, user_ids)
        if graphs.interactions is not None and self.config.propagation_layers > 0:
            users, items, layers = propagate(graphs.interactions, users0, items0, self.config.propagation_layers,
                                             self.config.layer0_weight, self.config.graph_unit_layers)
        else:
            users, items, layers = users0, items0, [items0]
        items = nn.functional.normalize(items, dim=1)
        if self.popularity is not None:
            items = self.popularity.items(items, catalog.popularity)
        return TowerOutput(self.finalise_users(users), items, encoding, items0, layers)

    def check_graph(self, graphs: GraphContext) -> None:
        """Refuse a train graph normalised with other degree exponents than the config's: the served tower
        divides a live history by its length to the config's exponent, so the two would silently disagree."""
        graph = graphs.interactions
        wanted = (self.config.graph_self_exponent, self.config.graph_neighbour_exponent)
        if graph is not None and (graph.self_exponent, graph.neighbour_exponent) != wanted:
            raise ValueError(f"the interaction graph is normalised with degree exponents "
                             f"{(graph.self_exponent, graph.neighbour_exponent)}, the model config says {wanted}: "
                             f"build it with InteractionGraph.renormalised(*those)")

    def layer_cache(self, catalog: ItemCatalog, histories: UserHistories, graphs: GraphContext) -> LayerCache | None:
        """What the sampled step reads for its neighbours (None without propagation): see `LayerCache`.

        One full pass without gradients, in the caller's mode (the trainer uses eval: no ID dropout).
        """
        layers = self.config.propagation_layers
        if graphs.interactions is None or layers == 0:
            return None
        with torch.no_grad():
            items0 = self.item_inputs(self.item_tower(catalog), graphs)
            users0 = self.user_tower(histories, items0)
            user_layers, item_layers = propagation_layers(graphs.interactions, users0, items0, layers,
                                                          self.config.graph_unit_layers)
        return LayerCache(users0, items0, torch.stack(user_layers[1:]).sum(0), torch.stack(item_layers[1:]).sum(0))

    def propagated_input(self, x: torch.Tensor) -> torch.Tensor:
        """A layer's vectors as the next layer sums them (unit length under `model.graph_unit_layers`)."""
        return nn.functional.normalize(x, dim=1) if self.config.graph_unit_layers else x

    def step_forward(self, catalog: ItemCatalog, graphs: GraphContext, sample: StepSample, cache: LayerCache | None,
                     generator: torch.Generator | None = None) -> StepOutput:
        """`forward`'s vectors for the sample's users and candidates only, from the items it encodes.

        Equal to `forward`'s rows when `cache` holds the current weights' layers, whatever the fan-out
        (tests/test_training_sampled_step.py; see `LayerCache`); the cost grows with the sample, not
        with the catalogue.
        """
        encoded, knn = sample.encode, None
        if graphs.item_knn is not None and self.config.item_knn > 0:  # the kNN smoothing reads 1 hop more
            knn = sample_neighbours(graphs.item_knn.matrix, encoded, None)
            encoded = torch.unique(torch.cat([encoded, knn.nodes]))
        encoding = self.item_tower(catalog, generator, rows=encoded)
        items0 = encoding.base.index_select(0, torch.searchsorted(encoded, sample.encode))  # rows = sample.encode
        if knn is not None:
            items0 = items0 + self.config.item_knn_weight * knn.aggregate(
                encoding.base.index_select(0, torch.searchsorted(encoded, knn.nodes)), len(sample.encode))
        local = lambda ids: torch.searchsorted(sample.encode, ids)  # noqa: E731 - rows of items0
        pooled0 = self.user_tower(sample.histories, items0, item_rows=local(sample.histories.items))
        users0 = pooled0.index_select(0, torch.searchsorted(sample.pooled, sample.users))
        users, items = users0, items0.index_select(0, local(sample.candidates))
        layers = self.config.propagation_layers
        if layers > 0 and graphs.interactions is not None:
            assert cache is not None and sample.user_neighbours is not None
            un = sample.user_neighbours
            unit = self.propagated_input
            drift = unit(items0.index_select(0, local(un.nodes))) - unit(cache.items0.index_select(0, un.nodes))
            users_spread = [cache.users_propagated.index_select(0, sample.users),
                            un.aggregate(drift, len(sample.users))]
            items_spread = [cache.items_propagated.index_select(0, sample.candidates)]
            if sample.fresh_item_layer:
                inb = sample.item_neighbours
                drift = unit(pooled0.index_select(0, torch.searchsorted(sample.pooled, inb.nodes))) \
                    - unit(cache.users0.index_select(0, inb.nodes))
                items_spread.append(inb.aggregate(drift, len(sample.candidates)))
            if self.config.layer0_weight is None:  # LightGCN's layer mean, added in the order runs were trained with
                users, items = sum(users_spread, users) / (layers + 1), sum(items_spread, items) / (layers + 1)
            else:
                w0, wk = layer_weights(layers, self.config.layer0_weight)
                users, items = w0 * users + wk * sum(users_spread), w0 * items + wk * sum(items_spread)
        items = nn.functional.normalize(items, dim=1)
        if self.popularity is not None:
            items = self.popularity.items(items, catalog.popularity[sample.candidates])
        return StepOutput(self.finalise_users(users), items, pooled0, encoding, encoded)

    def folded_propagation(self, output: TowerOutput, graphs: GraphContext) -> tuple[torch.Tensor, float]:
        """(propagated per-item table, layer scale) of `ServingTables`, differentiable (the next-item
        objective builds prefix users from it)."""
        n_layers = len(output.item_layers) - 1
        layer0, layer_k = layer_weights(n_layers, self.config.layer0_weight)
        propagated = torch.zeros_like(output.item_inputs)
        if n_layers and graphs.interactions is not None:
            degree = torch.as_tensor(graphs.interactions.item_degree).clamp(min=1).unsqueeze(1)
            divisor = degree_divisor(degree, graphs.interactions.neighbour_exponent)
            summed = sum(self.propagated_input(layer) for layer in output.item_layers[:n_layers])
            propagated = summed / divisor * layer_k
        return propagated, layer0

    def serving_tables(self, output: TowerOutput, graphs: GraphContext) -> ServingTables:
        """Fold the propagation into per-item tables (exact for train histories; see `ServingTables`)."""
        propagated, scale = self.folded_propagation(output, graphs)
        return ServingTables(output.item_inputs.detach().numpy().copy(), propagated.detach().numpy().copy(), scale)
