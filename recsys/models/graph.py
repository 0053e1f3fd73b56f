"""Frozen graphs the towers propagate over: the user-item train graph and the item-item content kNN graph.

Why graphs in a two-tower model: TikTok users have a median of 2 train interactions, so a user
vector built from those items alone is thin. LightGCN-style propagation lets a user vector see the
items co-occurring with its history, and the FREEDOM-style content kNN graph lets an item borrow
from content-similar items (the only signal a never-seen item has). Both are linear and computed
offline, so serving is still one user vector · item vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


def to_torch_csr(matrix: sp.spmatrix) -> torch.Tensor:
    """scipy -> torch sparse CSR (float32), for accelerator devices."""
    coo = sp.coo_matrix(matrix, dtype=np.float32)
    coo.sum_duplicates()
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.long)
    with torch.sparse.check_sparse_tensor_invariants(False):
        out = torch.sparse_coo_tensor(indices, torch.as_tensor(coo.data), tuple(int(s) for s in coo.shape)).coalesce()
    return out.to_sparse_csr()


class FrozenSparse:
    """A fixed sparse matrix A (and its transpose) that multiplies dense tensors with autograd.

    On CPU the product runs in scipy: torch's CPU sparse matmul was ~30x slower here (22 ms vs
    0.8 ms for the TikTok graph x 64 dims) and its backward re-sorts A every step.
    """

    def __init__(self, matrix: sp.spmatrix):
        self.matrix = sp.csr_matrix(matrix, dtype=np.float32)
        self._transpose: sp.csr_matrix | None = None
        self._device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def transpose(self) -> sp.csr_matrix:
        """A^T as CSR, built on first use (a product without gradient never needs it)."""
        if self._transpose is None:
            self._transpose = sp.csr_matrix(self.matrix.T)
        return self._transpose

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return _FrozenSpMM.apply(x, self)

    @property
    def T(self) -> "FrozenSparse":  # noqa: N802 (matrix notation)
        return FrozenSparse(self.transpose)

    def multiply(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        if x.device.type == "cpu":
            m = self.transpose if transpose else self.matrix
            return torch.from_numpy(np.asarray(m @ x.detach().contiguous().numpy(), dtype=np.float32))
        key = str(x.device)
        if key not in self._device:
            self._device[key] = (to_torch_csr(self.matrix).to(x.device), to_torch_csr(self.transpose).to(x.device))
        return torch.sparse.mm(self._device[key][int(transpose)], x)


class _FrozenSpMM(torch.autograd.Function):
    """y = A x; dL/dx = A^T dL/dy (A is data, never a parameter)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: FrozenSparse) -> torch.Tensor:  # type: ignore[override]
        ctx.a = a
        return a.multiply(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return ctx.a.multiply(grad, transpose=True), None


@dataclass
class InteractionGraph:
    """Degree-normalised bipartite adjacency of the train interactions, one matrix per direction.

    A node aggregating its neighbours weighs each by deg(node)^-a · deg(neighbour)^-b (`self_exponent` a,
    `neighbour_exponent` b): users <- items is D_u^-a R D_i^-b, items <- users D_i^-a Rᵀ D_u^-b. LightGCN's
    symmetric D^-1/2 R D^-1/2 is a = b = 1/2, the default; LightGCN++ (Lee et al., RecSys 2024) shows the two
    exponents are worth separating (its recommended a .6, b -.1: a heavy node's sum shrinks more, a popular
    neighbour weighs a little more).
    """

    user_item: FrozenSparse  # (n_users, n_items)
    item_user: FrozenSparse  # (n_items, n_users)
    item_degree: np.ndarray  # (n_items,) train interactions per item
    user_degree: np.ndarray  # (n_users,)
    self_exponent: float = 0.5
    neighbour_exponent: float = 0.5

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
                   self_exponent: float = 0.5, neighbour_exponent: float = 0.5) -> "InteractionGraph":
        r = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
        r.data[:] = 1.0  # duplicates count once
        user_degree, item_degree = np.asarray(r.sum(1)).ravel(), np.asarray(r.sum(0)).ravel()
        du, di = np.maximum(user_degree, 1), np.maximum(item_degree, 1)
        user_item = sp.diags(_power(du, -self_exponent)) @ r @ sp.diags(_power(di, -neighbour_exponent))
        if self_exponent == neighbour_exponent:  # symmetric: one matrix and its transpose
            item_user = user_item.T
        else:
            item_user = sp.diags(_power(di, -self_exponent)) @ r.T @ sp.diags(_power(du, -neighbour_exponent))
        return cls(FrozenSparse(user_item), FrozenSparse(item_user), item_degree.astype(np.float32),
                   user_degree.astype(np.float32), self_exponent, neighbour_exponent)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The (user, item) edges of the graph."""
        coo = self.user_item.matrix.tocoo()
        return coo.row, coo.col

    def renormalised(self, self_exponent: float, neighbour_exponent: float) -> "InteractionGraph":
        """The same edges under other degree exponents (the graph itself when they are these)."""
        if (self_exponent, neighbour_exponent) == (self.self_exponent, self.neighbour_exponent):
            return self
        n_users, n_items = self.user_item.shape
        return InteractionGraph.from_pairs(*self.pairs(), n_users, n_items, self_exponent, neighbour_exponent)


def _power(degree: np.ndarray, exponent: float) -> np.ndarray:
    """degree ** exponent, LightGCN's -1/2 computed as 1 / sqrt (bit for bit the graphs runs were trained on)."""
    return 1 / np.sqrt(degree) if exponent == -0.5 else degree ** exponent


def degree_divisor(count: torch.Tensor, exponent: float) -> torch.Tensor:
    """count ** exponent as a divisor (LightGCN's 1/2 as sqrt, bit for bit what runs were trained with)."""
    return count.sqrt() if exponent == 0.5 else count ** exponent


def thinned_graph(graph: InteractionGraph, drop: float, mode: str = "uniform",
                  generator: torch.Generator | None = None) -> InteractionGraph:
    """The train graph without a random `drop` share of its edges, normalised again over the edges kept.

    Why: a TikTok user has a median of 2 train items, and the full graph hands each of them the same
    neighbourhood every step; propagating over a different subgraph each step (DropEdge, SGL's edge dropout)
    keeps a user's vector from resting on any one edge. `mode="degree"` is FREEDOM's degree-sensitive pruning:
    an edge is kept with odds 1/sqrt(deg(user)·deg(item)) (drawn without replacement), so the edges between
    heavy users and popular items, which dominate the neighbour sums, are the ones that go.
    """
    rows, cols = graph.pairs()
    n_edges = len(rows)
    keep_n = max(int(round(n_edges * (1.0 - drop))), 1)
    if mode == "degree":
        odds = torch.as_tensor(1.0 / np.sqrt(np.maximum(graph.user_degree[rows] * graph.item_degree[cols], 1.0)))
        kept = torch.multinomial(odds, keep_n, replacement=False, generator=generator).numpy()
    elif mode == "uniform":
        kept = torch.randperm(n_edges, generator=generator)[:keep_n].numpy()
    else:
        raise ValueError(f"edge dropout mode {mode!r}: expected 'uniform' or 'degree'")
    n_users, n_items = graph.user_item.shape
    return InteractionGraph.from_pairs(rows[kept], cols[kept], n_users, n_items, graph.self_exponent,
                                       graph.neighbour_exponent)


def propagation_layers(graph: InteractionGraph, users0: torch.Tensor, items0: torch.Tensor, layers: int,
                       unit_inputs: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """LightGCN's layers 0..L of the users and of the items (alternating neighbour sums).

    `unit_inputs`: each layer's vectors are scaled to unit length before they are summed into the next
    (LightGCN++), so a neighbour's weight is the graph's and not also its vector's length.
    """
    user_layers, item_layers = [users0], [items0]
    u, i = users0, items0
    for _ in range(layers):
        if unit_inputs:
            u, i = torch.nn.functional.normalize(u, dim=1), torch.nn.functional.normalize(i, dim=1)
        u, i = graph.user_item @ i, graph.item_user @ u
        user_layers.append(u)
        item_layers.append(i)
    return user_layers, item_layers


def layer_weights(layers: int, layer0_weight: float | None) -> tuple[float, float]:
    """(weight of layer 0, weight of each layer 1..L) in the final vector.

    LightGCN takes the mean of layers 0..L (None); LightGCN++ gives layer 0 its own weight g and the
    propagated layers the mean of the rest, (1 - g) / L (its best g was 0 on LastFM and MovieLens-1M).
    """
    if layers == 0:
        return 1.0, 0.0
    if layer0_weight is None:
        return 1.0 / (layers + 1), 1.0 / (layers + 1)
    return float(layer0_weight), (1.0 - float(layer0_weight)) / layers


def propagate(graph: InteractionGraph, users0: torch.Tensor, items0: torch.Tensor, layers: int,
              layer0_weight: float | None = None, unit_inputs: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """LightGCN: the layers 0..L of alternating neighbour sums combined (`layer_weights`: by default their mean);
    returns (users, items, item layers).

    The item layers 0..L-1 are what a *new* history needs at serving time (user layer k is the
    normalised sum of the history's item layer k-1), so they are returned too.
    """
    user_layers, item_layers = propagation_layers(graph, users0, items0, layers, unit_inputs)
    if layer0_weight is None or layers == 0:
        return torch.stack(user_layers).mean(0), torch.stack(item_layers).mean(0), item_layers
    w0, wk = layer_weights(layers, layer0_weight)
    users = w0 * user_layers[0] + wk * torch.stack(user_layers[1:]).sum(0)
    items = w0 * item_layers[0] + wk * torch.stack(item_layers[1:]).sum(0)
    return users, items, item_layers


@dataclass
class Neighbours:
    """Sampled neighbourhoods of some rows of a sparse matrix A: entry e is neighbour `nodes[e]` of row
    `segment[e]` (a position in the rows asked for) with weight `weight[e]`, so that
    `segment_sum(weight * x[nodes])` estimates (A @ x)[rows] without bias (exact for rows of degree <= fan-out)."""

    segment: torch.Tensor
    nodes: torch.Tensor
    weight: torch.Tensor

    def aggregate(self, values: torch.Tensor, n_rows: int) -> torch.Tensor:
        """Σ_e weight[e] · values[e] per row; `values` are the neighbours' vectors, one per entry."""
        out = torch.zeros(n_rows, values.shape[1], dtype=values.dtype)
        return out.index_add(0, self.segment, self.weight.unsqueeze(1) * values)


def sample_neighbours(matrix: sp.csr_matrix, rows: torch.Tensor, fanout: int | None,
                      generator: torch.Generator | None = None) -> Neighbours:
    """GraphSAGE/PinSage-style fan-out: every neighbour of a row with at most `fanout`, else `fanout`
    drawn uniformly with replacement, each weighted degree / fanout (so the sum stays unbiased).
    `fanout=None`: every neighbour of every row (exact; for graphs of bounded degree such as the kNN one).

    Cost is O(len(rows) x fanout), whatever the size of the matrix.
    """
    r = rows.numpy()
    start = matrix.indptr[r].astype(np.int64)
    degree = matrix.indptr[r + 1].astype(np.int64) - start
    small = np.ones(len(r), bool) if fanout is None else degree <= fanout
    fanout = fanout or 1
    lengths = degree[small]
    seg_small = np.repeat(np.flatnonzero(small), lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    pos_small = np.repeat(start[small], lengths) + within
    big = np.flatnonzero(~small)
    draws = (torch.rand((len(big), fanout), generator=generator).numpy() * degree[big, None]).astype(np.int64)
    draws = np.minimum(draws, degree[big, None] - 1)
    pos_big = (start[big, None] + draws).ravel()
    seg_big = np.repeat(big, fanout)
    scale = np.concatenate([np.ones(len(pos_small), np.float32),
                            np.repeat(degree[big] / fanout, fanout).astype(np.float32)])
    pos = np.concatenate([pos_small, pos_big])
    return Neighbours(torch.as_tensor(np.concatenate([seg_small, seg_big]), dtype=torch.long),
                      torch.as_tensor(matrix.indices[pos], dtype=torch.long),
                      torch.as_tensor(matrix.data[pos] * scale, dtype=torch.float32))


def item_knn_graph(features: dict[str, np.ndarray], masks: dict[str, np.ndarray], k: int,
                   chunk: int = 2048, standardise: bool = False) -> sp.csr_matrix:
    """Frozen item-item graph: per medium, each item's top-k cosine neighbours; media averaged.

    `standardise`: cosines of each medium's features z-scored over the items that have it (removes a
    mean shared by all items, which otherwise dominates the cosine), else of the raw features.

    Items without a medium take no part in that medium's graph, so an audio-only item still gets
    audio neighbours. Symmetrised and D^-1/2 A D^-1/2 normalised like the interaction graph.
    Memory is O(chunk x n_items), not O(n_items^2).
    """
    n_items = next(iter(features.values())).shape[0]
    total = sp.csr_matrix((n_items, n_items), dtype=np.float32)
    for medium, x in features.items():
        has = np.asarray(masks[medium], dtype=bool)
        if has.sum() <= 1:
            continue
        rows_idx = np.flatnonzero(has)
        v = np.asarray(x[rows_idx], dtype=np.float32)
        if standardise:
            v = (v - v.mean(0)) / (v.std(0) + 1e-6)
        z = torch.nn.functional.normalize(torch.as_tensor(v), dim=1)
        kk = min(k, len(rows_idx) - 1)
        rows, cols = [], []
        for start in range(0, len(rows_idx), chunk):
            sim = z[start:start + chunk] @ z.T
            sim[torch.arange(sim.shape[0]), torch.arange(start, start + sim.shape[0])] = -torch.inf
            top = torch.topk(sim, kk, dim=1).indices.numpy()
            rows.append(np.repeat(rows_idx[start:start + chunk], kk))
            cols.append(rows_idx[top.ravel()])
        a = sp.csr_matrix((np.ones(sum(len(r) for r in rows), np.float32), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(n_items, n_items))
        a = ((a + a.T) > 0).astype(np.float32)
        deg = np.asarray(a.sum(1)).ravel()
        d = sp.diags(1 / np.sqrt(np.maximum(deg, 1)))
        total = total + d @ a @ d
    n_media = max(1, sum(1 for m in features if np.asarray(masks[m]).sum() > 1))
    return sp.csr_matrix(total / n_media, dtype=np.float32)
