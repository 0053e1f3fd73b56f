"""The training task: wraps `TwoTower` with its objective (TorchRec's `TwoTowerTrainTask` pattern).

Kept apart from the model so the loss can change (softmax/BPR, alignment weight) without touching
the towers, and so serving never imports the objective.

Two kinds of step (`LossConfig.step`):

- **full**: both towers over the whole catalogue and user base, because the LightGCN propagation
  needs all layer-0 vectors; the loss then looks at the batch rows only. Exact propagation
  gradients, and on a few thousand items it costs well under a second on a CPU: the TikTok (6.7k
  items) and ML-100K (1.7k) defaults are measured with it.
- **sampled**: what production two-towers do. A step encodes only the items it needs — the batch's
  positives, its negatives (in-batch, plus `uniform_negatives`, logQ-corrected), the batch users'
  history windows and a fan-out of graph neighbours (`fanout`, PinSage/GraphSAGE-style) — and takes
  the propagation terms from a per-epoch layer cache (historical embeddings), corrected by the
  sampled neighbours' change since the cache was built (a control variate, `LayerCache`): exact in
  value at the refresh, unbiased after, and the gradient reaches the neighbours' layer 0. With
  `item_fanout` > 0 the candidates' sampled users are pooled from their histories too, so the item
  side's propagation is corrected (and differentiated) the same way. Its cost is bounded by batch x
  (window + fan-out), whatever the catalogue size, and the TorchRec tables are looked up (and get
  gradient rows) for those ids only, with sparse gradients and a lazy (row-wise) Adam that decays
  the looked-up rows (`training.trainer.SplitOptimizer`), so DistributedModelParallel can shard them.

- **sequence**: next-item training on windows of users' train sequences (`SequenceWindows`, SASRec's
  unit): the whole catalogue's item tower, the windows' histories through the user tower once, and
  every history entry's prefix vector (`UserTower.prefix_states`: exactly the served tower's vector
  for the history ending there) trained on the item after it with a full softmax (or in-batch with
  logQ). One causal pass trains all of a window's transitions, so a step costs windows x positions
  and never re-encodes the user base. No graph propagation: a prefix's vector must not read events
  after it through the graph. What the recipe's next-item regime trains with (BENCHMARKS.md).

`auto` picks full up to `AUTO_FULL_MAX_ITEMS` items: below it the full step is both affordable
(~0.6 s per step at 10k items on one CPU thread) and the better objective (exact, fresh
propagation; every row decays and moves every step: ML-100K test N@20 .0998 vs .0934 sampled),
above it the full step's cost is what does not scale (9.3 s at 1M items vs 0.30 s sampled;
BENCHMARKS.md, "Training step vs catalogue size").
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from recsys.models.config import LossConfig
from recsys.models.graph import sample_neighbours, thinned_graph
from recsys.models.item_tower import ItemCatalog
from recsys.models.losses import (bpr_loss, candidate_log_q, candidate_softmax_loss, cross_media_alignment,
                                  full_softmax_loss, grouped_sampled_softmax_loss, horizon_softmax_loss, log_popularity,
                                  mixed_candidates, pair_bpr_loss, pairs_alignment, view_contrast_loss)
from recsys.models.next_item import SequenceWindows, next_item_users
from recsys.models.two_tower import GraphContext, LayerCache, StepSample, TwoTower
from recsys.models.user_tower import UserHistories

AUTO_FULL_MAX_ITEMS = 50_000


def resolve_step(loss: LossConfig, n_items: int) -> str:
    """"full" or "sampled": the configured step, or the `auto` rule by catalogue size (see the module doc)."""
    if loss.step != "auto":
        return loss.step
    if loss.kind == "full_softmax":  # scores every item: nothing to sample
        return "full"
    return "full" if n_items <= AUTO_FULL_MAX_ITEMS else "sampled"


@dataclass
class TaskInputs:
    """The full-graph inputs every step sees (frozen data, built from train only)."""

    catalog: ItemCatalog
    histories: UserHistories
    graphs: GraphContext
    item_counts: torch.Tensor  # (n_items,) train interactions per item
    sequences: SequenceWindows | None = None  # the sequence step's training units (`loss.step = "sequence"`)
    _pair_rows: list[tuple[int, int, torch.Tensor]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.log_popularity = log_popularity(self.item_counts)
        self.warm = self.item_counts > 0
        self.history_starts = torch.cumsum(self.histories.lengths, 0) - self.histories.lengths

    def user_histories(self, users: torch.Tensor) -> UserHistories:
        """The history windows of `users` only (rows in that order; ages kept)."""
        lengths = self.histories.lengths[users]
        total = int(lengths.sum())
        first = torch.repeat_interleave(self.history_starts[users] - (torch.cumsum(lengths, 0) - lengths), lengths)
        entries = first + torch.arange(total)
        return UserHistories(self.histories.items.index_select(0, entries), lengths,
                             torch.repeat_interleave(torch.arange(len(users)), lengths),
                             self.histories.age.index_select(0, entries))

    def alignment_sample(self, batch: int, generator: torch.Generator | None = None
                         ) -> list[tuple[int, int, torch.Tensor]]:
        """Per pair of media, up to `batch` distinct random warm items having both (O(batch) per step)."""
        if self._pair_rows is None:
            present, n = self.catalog.present, self.catalog.present.shape[1]
            self._pair_rows = [(x, y, torch.nonzero(self.warm & present[:, x] & present[:, y]).squeeze(1))
                               for x in range(n) for y in range(x + 1, n)]
        out = []
        for x, y, rows in self._pair_rows:
            if len(rows) < 2:
                continue
            pick = rows if len(rows) <= batch else rows[torch.unique(torch.randint(0, len(rows), (batch,),
                                                                                    generator=generator))]
            out.append((x, y, pick))
        return out


def sparse_tables(module: nn.Module) -> list[nn.Parameter]:
    """Switch the TorchRec tables' EmbeddingBags to sparse gradients; returns their weights.

    A sampled step looks up a few thousand rows of a table that may hold millions: a dense gradient
    (and a dense Adam update) would cost O(catalogue) per step again.
    """
    weights = []
    for bag in module.modules():
        if isinstance(bag, nn.EmbeddingBag):
            bag.sparse = True
            weights.append(bag.weight)
    return weights


class TwoTowerTrainTask(nn.Module):
    """Loss of a batch of (user, positive item) train pairs under the two-tower model (full or sampled step).

    Args:
        model: the two-tower; loss: objective config; inputs: frozen full-graph inputs.
    Example::
        task = TwoTowerTrainTask(model, LossConfig(), inputs); loss, parts = task(users, items, gen)
    """

    def __init__(self, model: TwoTower, loss: LossConfig, inputs: TaskInputs):
        super().__init__()
        self.model = model
        self.loss_config = loss
        self.inputs = inputs
        self.step_kind = resolve_step(loss, inputs.catalog.n_items)
        if self.step_kind == "sampled" and loss.next_item:
            raise ValueError(f"loss.next_item needs every prefix of a history, which the sampled step "
                             f"({inputs.catalog.n_items:,} items, loss.step={loss.step!r}) does not encode: "
                             "set loss.next_item=false or loss.step=\"full\"")
        for option, active, what in (("loss.softmax_group", loss.softmax_group > 0,
                                      "splits the full step's batch into several softmaxes"),
                                     ("model.edge_dropout", model.config.edge_dropout > 0,
                                      "thins the graph the full step propagates over")):
            if active and self.step_kind != "full":
                raise ValueError(f"{option} {what}; this run's step is {self.step_kind!r} "
                                 f"({inputs.catalog.n_items:,} items, loss.step={loss.step!r}): "
                                 f"set {option}=0 or loss.step=\"full\"")
        if self.step_kind == "sequence":
            cfg = model.config
            if cfg.propagation_layers > 0 or cfg.user_pooling == "attention" or cfg.history_embedding:
                raise ValueError("loss.step=\"sequence\" trains every history prefix as the served tower encodes it "
                                 "alone: it needs model.propagation_layers=0, user_pooling mean or self_attention "
                                 "and history_embedding=false")
            if inputs.sequences is None:
                raise ValueError("loss.step=\"sequence\" needs the train sequences (TaskInputs.sequences)")
        self.cache: LayerCache | None = None
        if self.step_kind == "sampled":
            sparse_tables(model)

    @property
    def uses_cache(self) -> bool:
        return (self.step_kind == "sampled" and self.inputs.graphs.interactions is not None
                and self.model.config.propagation_layers > 0)

    def begin_epoch(self) -> None:
        """Sampled step: refresh the layer cache from the current weights (one no-grad pass, eval mode)."""
        if not self.uses_cache:
            return
        was_training = self.training
        self.eval()
        x = self.inputs
        self.cache = self.model.layer_cache(x.catalog, x.histories, x.graphs)
        self.train(was_training)

    def forward(self, users: torch.Tensor, items: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.step_kind == "sampled":
            return self.sampled_forward(users, items, generator)
        if self.step_kind == "sequence":
            return self.sequence_forward(users, generator)
        x = self.inputs
        out = self.model(x.catalog, x.histories, self.step_graphs(generator), generator)
        cfg = self.loss_config
        batch_users = next_item_users(self.model, out, x.histories, x.graphs, users, items) if cfg.next_item \
            else out.users[users]
        main = self.retrieval_loss(batch_users, items, users, out.items, generator)
        parts = {"retrieval": main.detach()}
        loss = main
        if cfg.content_weight > 0 and x.catalog.media:
            content_items = nn.functional.normalize(out.item_encoding.content, dim=1)
            if self.model.popularity is not None:  # same space as the served items (dim + 1)
                content_items = self.model.popularity.items(content_items, x.catalog.popularity)
            content = self.retrieval_loss(batch_users, items, users, content_items, generator)
            parts["content"] = content.detach()
            loss = loss + cfg.content_weight * content
        if cfg.alignment_weight > 0 and len(x.catalog.media) > 1:
            align = cross_media_alignment(out.item_encoding.media, x.catalog.present, x.warm, cfg.alignment_batch,
                                          cfg.alignment_temperature, generator)
            parts["alignment"] = align.detach()
            loss = loss + cfg.alignment_weight * align
        return loss, parts

    def step_graphs(self, generator: torch.Generator | None) -> GraphContext:
        """The graphs a full training step propagates over: the train graph, thinned by `model.edge_dropout`."""
        graphs, drop = self.inputs.graphs, self.model.config.edge_dropout
        if not (self.training and drop > 0 and graphs.interactions is not None):
            return graphs
        return replace(graphs, interactions=thinned_graph(graphs.interactions, drop,
                                                          self.model.config.edge_dropout_mode, generator))

    def sequence_forward(self, windows: torch.Tensor, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of the windows `windows` (rows of `inputs.sequences`): every history entry's prefix vector
        (exactly the served tower's vector for the history ending there) against the item after it.

        SASRec's unit of training: one causal pass per window trains all of its transitions, so a step
        costs windows x positions, not users x catalogue. The item side is the whole catalogue's item
        tower output (shared with the history inputs, as SASRec shares its item embeddings).
        """
        x, cfg = self.inputs, self.loss_config
        encoding = self.model.item_tower(x.catalog, generator)
        items0 = self.model.item_inputs(encoding, x.graphs)
        histories, targets, owners = x.sequences.batch(windows)
        states = self.model.user_tower.prefix_states(histories, items0)
        batch_users = self.model.finalise_users(states)
        item_vectors = nn.functional.normalize(items0, dim=1)
        if self.model.popularity is not None:
            item_vectors = self.model.popularity.items(item_vectors, x.catalog.popularity)
        if cfg.target_horizon > 1:  # every prefix trained on its next few items, not the next alone
            main = horizon_softmax_loss(batch_users, x.sequences.horizon_targets(windows, cfg.target_horizon),
                                        item_vectors, self.model.temperature, cfg.horizon_decay)
        else:
            main = self.retrieval_loss(batch_users, targets, owners, item_vectors, generator)
        parts = {"retrieval": main.detach()}
        loss = main
        if cfg.view_contrast_weight > 0 and self.training:  # a second pass: other dropout masks, same prefixes
            second = self.model.user_tower.prefix_states(histories, items0)
            contrast = view_contrast_loss(states, second, targets, cfg.view_contrast_temperature)
            parts["view_contrast"] = contrast.detach()
            loss = loss + cfg.view_contrast_weight * contrast
        if cfg.content_weight > 0 and x.catalog.media:
            content_items = nn.functional.normalize(encoding.content, dim=1)
            if self.model.popularity is not None:
                content_items = self.model.popularity.items(content_items, x.catalog.popularity)
            content = self.retrieval_loss(batch_users, targets, owners, content_items, generator)
            parts["content"] = content.detach()
            loss = loss + cfg.content_weight * content
        if cfg.alignment_weight > 0 and len(x.catalog.media) > 1:
            align = cross_media_alignment(encoding.media, x.catalog.present, x.warm, cfg.alignment_batch,
                                          cfg.alignment_temperature, generator)
            parts["alignment"] = align.detach()
            loss = loss + cfg.alignment_weight * align
        return loss, parts

    def retrieval_loss(self, batch_users: torch.Tensor, items: torch.Tensor, users: torch.Tensor,
                       item_vectors: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The configured retrieval objective of a batch against `item_vectors` (all items, normalised)."""
        cfg, temperature = self.loss_config, self.model.temperature
        if cfg.kind == "softmax":
            return grouped_sampled_softmax_loss(batch_users, items, users, item_vectors, self.inputs.log_popularity,
                                                temperature, cfg.softmax_group, cfg.logq_correction,
                                                cfg.uniform_negatives, generator, cfg.reverse_weight)
        if cfg.kind == "full_softmax":
            return full_softmax_loss(batch_users, items, item_vectors, temperature)
        return bpr_loss(batch_users, items, item_vectors, temperature, generator)

    # --- the sampled step -------------------------------------------------------------------
    def step_sample(self, users: torch.Tensor, items: torch.Tensor, generator: torch.Generator | None = None
                    ) -> tuple[StepSample, torch.Tensor, list[tuple[int, int, torch.Tensor]]]:
        """What a sampled step reads: (sample, candidates in loss order, alignment pairs)."""
        x, cfg = self.inputs, self.loss_config
        n_items = x.catalog.n_items
        if cfg.kind == "bpr":  # one uniform negative per positive, after the positives
            candidates = torch.cat([items, torch.randint(0, n_items, (len(items),), generator=generator)])
        else:
            candidates = mixed_candidates(items, n_items, cfg.uniform_negatives, generator)
        unique_users, unique_items = torch.unique(users), torch.unique(candidates)
        user_nb = item_nb = None
        pooled = unique_users
        reads = [unique_items]
        if self.uses_cache:
            graph = x.graphs.interactions
            user_nb = sample_neighbours(graph.user_item.matrix, unique_users, cfg.fanout, generator)
            reads.append(user_nb.nodes)
            if cfg.item_fanout:  # the candidates' sampled users get a fresh (differentiable) layer 0
                item_nb = sample_neighbours(graph.item_user.matrix, unique_items, cfg.item_fanout, generator)
                pooled = torch.unique(torch.cat([unique_users, item_nb.nodes]))
        histories = x.user_histories(pooled)
        reads.append(histories.items)
        pairs = x.alignment_sample(cfg.alignment_batch, generator) \
            if cfg.alignment_weight > 0 and len(x.catalog.media) > 1 else []
        reads += [rows for _, _, rows in pairs]
        sample = StepSample(unique_users, pooled, histories, unique_items, torch.unique(torch.cat(reads)), user_nb,
                            item_nb, fresh_item_layer=self.uses_cache and cfg.item_fanout > 0)
        return sample, candidates, pairs

    def sampled_forward(self, users: torch.Tensor, items: torch.Tensor, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, cfg = self.inputs, self.loss_config
        sample, candidates, pairs = self.step_sample(users, items, generator)
        if self.uses_cache and self.cache is None:
            self.begin_epoch()
        out = self.model.step_forward(x.catalog, x.graphs, sample, self.cache, generator)
        batch_users = out.users.index_select(0, torch.searchsorted(sample.users, users))
        at = torch.searchsorted(sample.candidates, candidates)
        main = self.candidate_loss(batch_users, items, users, candidates, out.items.index_select(0, at))
        parts = {"retrieval": main.detach()}
        loss = main
        if cfg.content_weight > 0 and x.catalog.media:
            content_items = nn.functional.normalize(out.encoding.content.index_select(0, out.rows(sample.candidates)), dim=1)
            if self.model.popularity is not None:
                content_items = self.model.popularity.items(content_items, x.catalog.popularity[sample.candidates])
            content = self.candidate_loss(batch_users, items, users, candidates, content_items.index_select(0, at))
            parts["content"] = content.detach()
            loss = loss + cfg.content_weight * content
        if pairs:
            align = pairs_alignment(out.encoding.media, pairs, cfg.alignment_temperature, out.rows)
            parts["alignment"] = align.detach()
            loss = loss + cfg.alignment_weight * align
        return loss, parts

    def candidate_loss(self, batch_users: torch.Tensor, items: torch.Tensor, users: torch.Tensor,
                       candidates: torch.Tensor, candidate_vectors: torch.Tensor) -> torch.Tensor:
        """The configured objective against the step's candidates (`step_sample`'s order)."""
        cfg, temperature = self.loss_config, self.model.temperature
        b = len(items)
        if cfg.kind == "bpr":
            return pair_bpr_loss(batch_users, candidate_vectors[:b], candidate_vectors[b:], temperature)
        log_q = candidate_log_q(self.inputs.log_popularity[candidates], b, cfg.uniform_negatives,
                                self.inputs.catalog.n_items)
        return candidate_softmax_loss(batch_users, items, users, candidates, candidate_vectors, log_q, temperature,
                                      cfg.logq_correction, cfg.reverse_weight)
