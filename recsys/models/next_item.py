"""The next-item objective: a train pair (user, item) whose item follows other items of the user's
history window trains the user vector of the history *before* it, not the whole window's vector.

Why: a user vector of the whole history scored against that history's own items rewards
reconstructing the history; the leave-one-out task asks for the *next* item. SASRec trains
every prefix of a sequence on its next item; here every prefix's vector is exactly what the
served tower returns for that prefix (`UserTower.prefix_states`, the folded propagation and the
popularity coordinate, as `ServedUserTower` computes a live user), so training optimises the
function serving runs. Pairs with no predecessor in the window (the window's oldest item, and
items older than the window) keep the whole-window vector.

`SequenceWindows` is the unit of the cheaper sequence step (`loss.step = "sequence"`, what the
recipe's next-item regime trains with): windows of each user's train sequence, every entry of a
window's history trained on the item after it, so the step never re-encodes the whole user base.
"""
from __future__ import annotations

import numpy as np
import torch

from recsys.models.graph import degree_divisor
from recsys.models.two_tower import GraphContext, TowerOutput, TwoTower
from recsys.models.user_tower import UserHistories


def predecessor_entries(histories: UserHistories, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """For each (user, item) pair, the history entry just before the item in the user's history, or -1.

    -1 when the item is not in the history or is its oldest entry.
    """
    n_items = int(histories.items.max()) + 1 if len(histories.items) else 1
    n_items = max(n_items, int(items.max()) + 1 if len(items) else 1)
    keys = histories.segment * n_items + histories.items
    order = torch.argsort(keys)
    sorted_keys = keys[order]
    wanted = users.long() * n_items + items.long()
    at = torch.searchsorted(sorted_keys, wanted).clamp(max=max(len(sorted_keys) - 1, 0))
    found = sorted_keys[at] == wanted if len(sorted_keys) else torch.zeros_like(wanted, dtype=torch.bool)
    entry = order[at]
    starts = torch.cumsum(histories.lengths, 0) - histories.lengths
    has_previous = found & (entry > starts[users.long()])
    return torch.where(has_previous, entry - 1, torch.full_like(entry, -1))


def next_item_users(model: TwoTower, output: TowerOutput, histories: UserHistories, graphs: GraphContext,
                    users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(batch, output_dim) unit user vectors for the pairs: the prefix before each item where it has
    one (kept within the tower's attended positions), else the user's whole-window vector."""
    previous = predecessor_entries(histories, users, items)
    if model.user_tower.sequence is not None:  # the prefix must lie within the attended positions
        previous = torch.where(histories.age.index_select(0, previous.clamp(min=0)) < model.user_tower.sequence.positions,
                               previous, torch.full_like(previous, -1))
    chosen = previous >= 0
    if not bool(chosen.any()):
        return output.users[users]
    entries = previous[chosen]
    prefix0 = model.user_tower.prefix_states(histories, output.item_inputs).index_select(0, entries)
    propagated, scale = model.folded_propagation(output, graphs)
    spread = torch.cumsum(propagated.index_select(0, histories.items), 0)
    starts = torch.cumsum(histories.lengths, 0) - histories.lengths
    owner = histories.segment.index_select(0, entries)
    before_start = starts.index_select(0, owner) - 1
    spread_prefix = spread.index_select(0, entries) - torch.where(
        (before_start >= 0).unsqueeze(1), spread.index_select(0, before_start.clamp(min=0)), torch.zeros_like(prefix0))
    length = (entries - starts.index_select(0, owner) + 1).to(prefix0.dtype)
    divisor = degree_divisor(length, model.config.graph_self_exponent)
    prefix_users = model.finalise_users(scale * prefix0 + spread_prefix / divisor.unsqueeze(1))
    out = output.users[users].clone()
    out[chosen] = prefix_users
    return out


class SequenceWindows:
    """Every user's train sequence cut into windows for the sequence step (`loss.step = "sequence"`).

    A window is up to `positions` + 1 consecutive items of one user, oldest first: its first
    `len - 1` items are a history (what the served tower reads, at most `positions` entries) and
    each of them is trained on the item that follows it. A user's windows end at the last train
    item, then `positions` items earlier, and so on (SASRec's cut), so every train transition is a
    target exactly once per epoch and the newest window is the served history plus nothing.

    Args:
        users, items: one row per train event (distinct pairs), sorted by (user, time).
        positions: the longest history a window gives the tower (the feature window).
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, positions: int):
        if positions < 1:
            raise ValueError(f"positions must be >= 1, got {positions}")
        users_np, items_np = users.numpy(), items.numpy()
        if len(users_np) and (users_np[1:] < users_np[:-1]).any():
            raise ValueError("SequenceWindows needs the train pairs sorted by user (then time)")
        counts = np.bincount(users_np, minlength=int(users_np.max()) + 1 if len(users_np) else 0)
        firsts = np.cumsum(counts) - counts
        starts, lengths, owners, user_ends = [], [], [], []
        for user in np.nonzero(counts >= 2)[0]:
            first, end = int(firsts[user]), int(firsts[user] + counts[user])
            user_end = end
            while end - first >= 2:
                start = max(first, end - positions - 1)
                starts.append(start)
                lengths.append(end - start)
                owners.append(user)
                user_ends.append(user_end)
                end -= positions
        self.items = torch.as_tensor(items_np, dtype=torch.long)
        self.starts = torch.as_tensor(np.asarray(starts, dtype=np.int64))
        self.lengths = torch.as_tensor(np.asarray(lengths, dtype=np.int64))
        self.users = torch.as_tensor(np.asarray(owners, dtype=np.int64))
        self.user_ends = torch.as_tensor(np.asarray(user_ends, dtype=np.int64))
        self.positions = positions

    @property
    def n_windows(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def n_targets(self) -> int:
        return int((self.lengths - 1).sum())

    def windows_per_batch(self, targets_per_batch: int) -> int:
        """Windows per step holding about `targets_per_batch` targets (`train.batch_size` counts targets)."""
        mean = self.n_targets / max(self.n_windows, 1)
        return max(1, int(round(targets_per_batch / max(mean, 1.0))))

    def _entries(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(history length per window, each entry's position in its window, each entry's row in `items`)
        of the windows `rows`, entries in window order."""
        inputs = self.lengths.index_select(0, rows) - 1
        offsets = torch.cumsum(inputs, 0) - inputs
        within = torch.arange(int(inputs.sum())) - torch.repeat_interleave(offsets, inputs)
        return inputs, within, torch.repeat_interleave(self.starts.index_select(0, rows), inputs) + within

    def batch(self, rows: torch.Tensor) -> tuple[UserHistories, torch.Tensor, torch.Tensor]:
        """(histories of the windows `rows`, the next item of each history entry, each entry's user)."""
        inputs, within, entries = self._entries(rows)
        segment = torch.repeat_interleave(torch.arange(len(rows)), inputs)
        age = (torch.repeat_interleave(inputs, inputs) - 1 - within).to(torch.float32)
        histories = UserHistories(self.items.index_select(0, entries), inputs, segment, age)
        return histories, self.items.index_select(0, entries + 1), self.users.index_select(0, rows).index_select(0, segment)

    def horizon_targets(self, rows: torch.Tensor, horizon: int) -> torch.Tensor:
        """(entries, horizon) the `horizon` train items after each history entry of the windows `rows`
        (column 0 = `batch`'s next item), -1 past the user's newest train item.

        Why: the later items may lie in the user's next window; they are still train events after the
        prefix, so a prefix can be trained on them without reading anything it will not have been shown.
        """
        inputs, _, entries = self._entries(rows)
        ends = torch.repeat_interleave(self.user_ends.index_select(0, rows), inputs)
        later = entries.unsqueeze(1) + torch.arange(1, horizon + 1).unsqueeze(0)
        inside = later < ends.unsqueeze(1)
        return torch.where(inside, self.items.index_select(0, later.clamp(max=len(self.items) - 1).flatten())
                           .view_as(later), torch.full_like(later, -1))
