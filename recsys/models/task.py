"""The training task: wraps `TwoTower` with its objective (TorchRec's `TwoTowerTrainTask` pattern).

Kept apart from the model so the loss can change (softmax/BPR, alignment weight) without touching
the towers, and so serving never imports the objective.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys.models.config import LossConfig
from recsys.models.item_tower import ItemCatalog
from recsys.models.losses import (bpr_loss, cross_media_alignment, full_softmax_loss, log_popularity,
                                  sampled_softmax_loss)
from recsys.models.next_item import next_item_users
from recsys.models.two_tower import GraphContext, TwoTower
from recsys.models.user_tower import UserHistories


@dataclass
class TaskInputs:
    """The full-graph inputs every step sees (frozen data, built from train only)."""

    catalog: ItemCatalog
    histories: UserHistories
    graphs: GraphContext
    item_counts: torch.Tensor  # (n_items,) train interactions per item

    def __post_init__(self) -> None:
        self.log_popularity = log_popularity(self.item_counts)
        self.warm = self.item_counts > 0


class TwoTowerTrainTask(nn.Module):
    """Loss of a batch of (user, positive item) train pairs under the two-tower model.

    Every step runs both towers over the whole (small) catalogue and user base, because the
    propagation needs all layer-0 vectors; the loss then looks at the batch rows only.

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

    def forward(self, users: torch.Tensor, items: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.inputs
        out = self.model(x.catalog, x.histories, x.graphs, generator)
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

    def retrieval_loss(self, batch_users: torch.Tensor, items: torch.Tensor, users: torch.Tensor,
                       item_vectors: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The configured retrieval objective of a batch against `item_vectors` (all items, normalised)."""
        cfg, temperature = self.loss_config, self.model.temperature
        if cfg.kind == "softmax":
            return sampled_softmax_loss(batch_users, items, users, item_vectors, self.inputs.log_popularity,
                                        temperature, cfg.logq_correction, cfg.uniform_negatives, generator)
        if cfg.kind == "full_softmax":
            return full_softmax_loss(batch_users, items, item_vectors, temperature)
        return bpr_loss(batch_users, items, item_vectors, temperature, generator)
