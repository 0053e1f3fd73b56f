"""SASRec (Kang & McAuley 2018): causal self-attention over a user's ordered history, the
sequential baseline of the next-item literature, in the same harness as every other baseline.

The paper's design: the last `max_len` (50) items, a learned position embedding per slot, `blocks`
(2) pre-LayerNorm self-attention blocks with a point-wise feed-forward net, dropout, item
embeddings shared between input and output (score = <h_t, e_i>), and training on **every
position** of every sequence with the next item as target. Loss: the full softmax over the
catalogue (`loss="ce"`, what RecBole trains SASRec with by default) or the paper's binary
cross-entropy with one uniform negative per position (`loss="bce"`).

Sequences are each user's train events in time order, equal timestamps in source-file order
(the split's own tie rule). A user with more than `max_len` + 1 train events contributes several
windows (ending at the last event, then `max_len` earlier, ...), so every train transition is a
training target once per epoch. A user is scored from the hidden state at the last of their
latest `max_len` train items, the same history the two-tower and the other baselines see (at
test time that is train only, exactly as for them). The epoch is chosen on `valid` (NDCG@20, as
BPR-MF and LightGCN; `epochs` is a cap).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from recsys.baselines.base import n_users_of, user_sequences
from recsys.baselines.bpr import sample_negatives
from recsys.baselines.selection import BestOnValid, torch_threads
from recsys.data.schema import Dataset

log = logging.getLogger(__name__)
PAD = 0  # sequence slot without an item; item i is token i + 1


@dataclass(frozen=True)
class SASRecConfig:
    dim: int = 64
    max_len: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2      # paper: .2 on MovieLens-1M
    inner: int = 0            # feed-forward width; 0 = dim (the paper's); RecBole's default is 256 (4 x 64)
    activation: str = "relu"  # the paper's; RecBole's default is "gelu"
    loss: str = "ce"          # "ce": softmax over all items; "bce": one uniform negative per position (paper)
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128     # sequences per step
    epochs: int = 200         # cap: the epoch is chosen on valid
    eval_every: int = 5
    patience: int = 4
    seed: int = 0
    threads: int = 1


class SASRecNet(nn.Module):
    """Item + position embeddings -> causal pre-LN transformer blocks -> final LayerNorm.

    `forward(seq)` maps (batch, max_len) left-padded token ids to (batch, max_len, dim) states;
    the state at slot t has seen slots <= t only.
    """

    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.items = nn.Embedding(n_items + 1, config.dim, padding_idx=PAD)
        self.positions = nn.Embedding(config.max_len, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(config.dim, config.heads, dim_feedforward=config.inner or config.dim,
                                           dropout=config.dropout, activation=config.activation, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, config.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[PAD].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        n, length = seq.shape
        pad = seq == PAD
        x = self.items(seq) * math.sqrt(self.config.dim) + self.positions.weight[:length]
        x = self.dropout(x).masked_fill(pad.unsqueeze(-1), 0.0)
        slots = torch.arange(length)
        # causal; padded keys hidden, except a slot's own (a padded slot attends to itself: no empty row)
        blocked = (slots[None, :] > slots[:, None]).unsqueeze(0) | (pad.unsqueeze(1) & ~torch.eye(length, dtype=torch.bool))
        mask = blocked.repeat_interleave(self.config.heads, dim=0)
        return self.norm(self.blocks(x, mask=mask))

    def item_table(self) -> torch.Tensor:
        """(n_items, dim) output embeddings of the real items (the shared input table without PAD)."""
        return self.items.weight[1:]


class SASRec:
    """The baseline: `fit` trains `SASRecNet` on train sequences, `score` ranks all items per user.

    Example::

        sas = SASRec(epochs=100).fit(ds, ds.split("train"))
        top = sas.score(np.array([0])).argsort()[0, ::-1][:10]
    """

    name = "sasrec"

    def __init__(self, config: SASRecConfig | None = None, **overrides: object) -> None:
        base = config or SASRecConfig()
        self.config = SASRecConfig(**{**base.__dict__, **overrides})
        self.net: SASRecNet | None = None
        self.best_epoch = 0
        self.valid_history: list[tuple[int, float]] = []
        self._last: torch.Tensor | None = None       # (n_users, max_len) each user's latest train window
        self._fallback: torch.Tensor | None = None   # (n_items,) train popularity for users with no history
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def fit(self, dataset: Dataset, train_interactions: pl.DataFrame) -> "SASRec":
        with torch_threads(self.config.threads):
            return self._fit(dataset, train_interactions)

    def _fit(self, dataset: Dataset, train: pl.DataFrame) -> "SASRec":
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        n_users, n_items = n_users_of(dataset, train), dataset.n_items
        sequences = user_sequences(train, n_users)
        inputs, targets, owners = training_windows(sequences, cfg.max_len)
        self._last = torch.as_tensor(np.stack([left_pad(s[-cfg.max_len:] + 1, cfg.max_len) for s in sequences]))
        self._fallback = torch.as_tensor(np.bincount(train["item_index"].to_numpy(), minlength=n_items), dtype=torch.float32)
        seen = np.unique(train["user_index"].to_numpy().astype(np.int64) * n_items + train["item_index"].to_numpy())
        self.net = SASRecNet(n_items, cfg)
        optimiser = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        pick = BestOnValid(self.net, dataset, train, cfg.eval_every, cfg.patience, cfg.epochs)
        for epoch in range(1, cfg.epochs + 1):
            self.net.train()
            self._cache = None
            order = rng.permutation(len(inputs))
            total = 0.0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                loss = self._loss(torch.from_numpy(inputs[idx]), torch.from_numpy(targets[idx]), owners[idx], seen, rng)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += loss.item() * len(idx)
            log.debug("sasrec epoch %d loss %.4f", epoch, total / len(order))
            if pick.stop_after(epoch, self.score):
                break
        pick.restore(self.name)
        self.best_epoch, self.valid_history = pick.best_epoch, pick.history
        self._cache = None
        return self

    def read_histories(self, interactions: pl.DataFrame) -> "SASRec":
        """Score users from the latest `max_len` items of `interactions` instead of their train events
        (RecBole's test input is train + valid); the trained weights are unchanged."""
        assert self._last is not None, "call fit() first"
        sequences = user_sequences(interactions, len(self._last))
        self._last = torch.as_tensor(np.stack([left_pad(s[-self.config.max_len:] + 1, self.config.max_len) for s in sequences]))
        self._cache = None
        return self

    def _loss(self, seq: torch.Tensor, target: torch.Tensor, owners: np.ndarray, seen: np.ndarray,
              rng: np.random.Generator) -> torch.Tensor:
        assert self.net is not None
        states = self.net(seq)
        real = target != PAD
        h, pos = states[real], target[real] - 1  # item indices of the next items
        table = self.net.item_table()
        if self.config.loss == "ce":
            return nn.functional.cross_entropy(h @ table.T, pos)
        users = np.broadcast_to(owners[:, None], target.shape)[real.numpy()]
        neg = torch.from_numpy(sample_negatives(users, seen, table.shape[0], rng))
        pos_logit, neg_logit = (h * table[pos]).sum(1), (h * table[neg]).sum(1)
        return -(nn.functional.logsigmoid(pos_logit) + nn.functional.logsigmoid(-neg_logit)).mean()

    @torch.no_grad()
    def _vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_users, dim) states at each user's last train item, (n_items, dim) item table."""
        assert self.net is not None and self._last is not None, "call fit() first"
        if self._cache is None:
            self.net.eval()
            users = torch.cat([self.net(self._last[i:i + 1024])[:, -1] for i in range(0, len(self._last), 1024)])
            self._cache = (users, self.net.item_table().detach().clone())
        return self._cache

    @torch.no_grad()
    def score(self, user_index_batch: np.ndarray) -> np.ndarray:
        users, items = self._vectors()
        index = torch.as_tensor(np.asarray(user_index_batch), dtype=torch.long)
        scores = users[index] @ items.T
        empty = (self._last[index] == PAD).all(1)
        scores[empty] = self._fallback
        return scores.numpy().astype(np.float32, copy=False)


def left_pad(tokens: np.ndarray, length: int) -> np.ndarray:
    out = np.full(length, PAD, dtype=np.int64)
    if len(tokens):
        out[-len(tokens):] = tokens
    return out


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, owner user) of every training window, tokens = item + 1, left-padded.

    A sequence s of n items gives windows ending at n, n - max_len, ...; each window's input is
    its items but the last and its target the items shifted by one, so every transition
    s[t] -> s[t+1] is a target exactly once.
    """
    inputs, targets, owners = [], [], []
    for user, seq in enumerate(sequences):
        tokens = seq + 1
        for end in range(len(tokens), 1, -max_len):
            window = tokens[max(0, end - max_len - 1):end]
            inputs.append(left_pad(window[:-1], max_len))
            targets.append(left_pad(window[1:], max_len))
            owners.append(user)
    if not inputs:
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64), np.zeros(0, np.int64)
    return np.stack(inputs), np.stack(targets), np.asarray(owners, dtype=np.int64)
