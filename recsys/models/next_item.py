"""The next-item objective: a train pair (user, item) whose item follows other items of the user's
history window trains the user vector of the history *before* it, not the whole window's vector.

Why: a user vector of the whole history scored against that history's own items rewards
reconstructing the history; the leave-one-out task asks for the *next* item. SASRec trains
every prefix of a sequence on its next item; here every prefix's vector is exactly what the
served tower returns for that prefix (`UserTower.prefix_states`, the folded propagation and the
popularity coordinate, as `ServedUserTower` computes a live user), so training optimises the
function serving runs. Pairs with no predecessor in the window (the window's oldest item, and
items older than the window) keep the whole-window vector.
"""
from __future__ import annotations

import torch

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
    prefix_users = model.finalise_users(scale * prefix0 + spread_prefix / length.sqrt().unsqueeze(1))
    out = output.users[users].clone()
    out[chosen] = prefix_users
    return out
