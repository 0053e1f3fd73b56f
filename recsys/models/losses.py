"""Training objectives: sampled softmax with logQ correction (+ mixed uniform negatives), BPR, InfoNCE.

Pure functions of tensors, so the training task can combine them and tests can check them alone.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F


def mixed_candidates(pos_items: torch.Tensor, n_items: int, n_uniform: int = 0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The sampled softmax's candidate set: the batch's positives, then `n_uniform` uniform negatives."""
    if n_uniform <= 0:
        return pos_items
    return torch.cat([pos_items, torch.randint(0, n_items, (n_uniform,), generator=generator)])


def candidate_log_q(log_popularity: torch.Tensor, batch: int, n_uniform: int, n_items: int) -> torch.Tensor:
    """log expected count of each candidate in the candidate set: `batch` popularity draws + uniform ones.

    `log_popularity` may be the whole catalogue's or only the candidates' rows (same formula).
    """
    return torch.log(batch * log_popularity.exp() + n_uniform / n_items)


def sampled_softmax_loss(users: torch.Tensor, pos_items: torch.Tensor, batch_users: torch.Tensor,
                         item_vectors: torch.Tensor, log_popularity: torch.Tensor, temperature: torch.Tensor,
                         logq_weight: float = 1.0, n_uniform: int = 0,
                         generator: torch.Generator | None = None, reverse_weight: float = 0.0) -> torch.Tensor:
    """Softmax over in-batch positives (+ `n_uniform` uniform negatives) of cosine scores / temperature.

    In-batch negatives are drawn proportionally to popularity, which would teach the model to
    under-score popular items; subtracting log(expected count in the candidate set) (Yi et al. 2019,
    mixed negatives as in Yang et al. 2020) makes the scores estimate the full softmax instead.
    Candidates that are positives of the same row (same item, or another item of the same user in
    the batch) are masked out rather than treated as negatives.

    Args:
        users: (B, d) normalised user vectors; pos_items: (B,) item indices; batch_users: (B,) user indices.
        item_vectors: (n_items, d) normalised; log_popularity: (n_items,) log train frequency share.
    """
    n_items = item_vectors.shape[0]
    candidates = mixed_candidates(pos_items, n_items, n_uniform, generator)
    log_q = candidate_log_q(log_popularity[candidates], len(pos_items), n_uniform, n_items)
    return candidate_softmax_loss(users, pos_items, batch_users, candidates, item_vectors[candidates], log_q,
                                  temperature, logq_weight, reverse_weight)


def grouped_sampled_softmax_loss(users: torch.Tensor, pos_items: torch.Tensor, batch_users: torch.Tensor,
                                 item_vectors: torch.Tensor, log_popularity: torch.Tensor, temperature: torch.Tensor,
                                 group: int, logq_weight: float = 1.0, n_uniform: int = 0,
                                 generator: torch.Generator | None = None, reverse_weight: float = 0.0) -> torch.Tensor:
    """`sampled_softmax_loss` of consecutive groups of `group` rows, each its own in-batch softmax (its own
    candidates and logQ), averaged over rows as one softmax's loss is.

    Why: on the full step one whole-graph propagation is what a step costs; a large batch spreads it over more
    pairs, while groups keep the (rows x candidates) logits, and the negatives each row sees, those of a usual
    batch. `group` <= 0 or >= the batch: one softmax, exactly `sampled_softmax_loss`.
    """
    b = len(pos_items)
    if group <= 0 or group >= b:
        return sampled_softmax_loss(users, pos_items, batch_users, item_vectors, log_popularity, temperature,
                                    logq_weight, n_uniform, generator, reverse_weight)
    total = users.new_zeros(())
    for start in range(0, b, group):
        rows = slice(start, start + group)
        part = sampled_softmax_loss(users[rows], pos_items[rows], batch_users[rows], item_vectors, log_popularity,
                                    temperature, logq_weight, n_uniform, generator, reverse_weight)
        total = total + part * len(pos_items[rows])
    return total / b


def candidate_softmax_loss(users: torch.Tensor, pos_items: torch.Tensor, batch_users: torch.Tensor,
                           candidates: torch.Tensor, candidate_vectors: torch.Tensor, log_q: torch.Tensor,
                           temperature: torch.Tensor, logq_weight: float = 1.0, reverse_weight: float = 0.0) -> torch.Tensor:
    """`sampled_softmax_loss` given the candidates' vectors only (the sampled training step encodes no more).

    Args:
        candidates: (C,) item indices whose first B are `pos_items` (`mixed_candidates`);
        candidate_vectors: (C, d) their normalised vectors; log_q: (C,) `candidate_log_q`.
        reverse_weight: weight of the reverse softmax, each positive item over the batch's users (the same
            logits, column-wise; the masked pairs stay masked, and the column's logQ cancels).
    """
    b = len(pos_items)
    logits = users @ candidate_vectors.T / temperature - logq_weight * log_q
    same = pos_items[:, None] == candidates[None, :]
    same[:, :b] |= batch_users[:, None] == batch_users[None, :]
    same[torch.arange(b), torch.arange(b)] = False
    logits = logits.masked_fill(same, -1e9)
    loss = F.cross_entropy(logits, torch.arange(b))
    if reverse_weight > 0:
        loss = loss + reverse_weight * F.cross_entropy(logits[:, :b].T, torch.arange(b))
    return loss


def full_softmax_loss(users: torch.Tensor, pos_items: torch.Tensor, item_vectors: torch.Tensor,
                      temperature: torch.Tensor) -> torch.Tensor:
    """Exact softmax over the whole catalogue (no sampling, hence no logQ correction).

    Why: with a catalogue of a few thousand items the (B, n_items) score matrix is cheap on a CPU
    (2048 x 6710 x 65 is ~1 GFLOP), and the exact softmax removes the popularity bias of in-batch
    negatives instead of correcting it after the fact.
    """
    return F.cross_entropy(users @ item_vectors.T / temperature, pos_items)


def horizon_softmax_loss(users: torch.Tensor, targets: torch.Tensor, item_vectors: torch.Tensor,
                         temperature: torch.Tensor, decay: float) -> torch.Tensor:
    """Exact softmax over the catalogue, each row trained on its next `horizon` items (PinnerFormer's
    dense all-action loss, cut to a short horizon).

    `targets` is (rows, horizon), -1 where a row has fewer later items. Item j after the prefix weighs
    `decay ** j` of the next item's weight; each row's weights sum to 1, so a row counts as much as
    with the next item alone. Why: on logs where several events share a timestamp (ML-100K's rating
    sessions) the order among the next few is arbitrary, and the next item alone is a noisy label.
    """
    log_probs = F.log_softmax(users @ item_vectors.T / temperature, dim=1)
    present = targets >= 0
    weights = decay ** torch.arange(targets.shape[1], dtype=log_probs.dtype).unsqueeze(0) * present
    weights = weights / weights.sum(dim=1, keepdim=True)
    picked = log_probs.gather(1, targets.clamp(min=0))
    return -(weights * picked).sum(dim=1).mean()


def view_contrast_loss(first: torch.Tensor, second: torch.Tensor, targets: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between two views of the same rows (two dropout passes of the user tower).

    Row i's positive is row i of the other view; the negatives are the other rows, except those
    whose next item is the same as row i's (DuoRec's semantic positives: counting them as
    negatives would push apart sequences the retrieval loss pulls together).
    """
    first, second = F.normalize(first, dim=1), F.normalize(second, dim=1)
    logits = first @ second.T / temperature
    same_target = (targets.unsqueeze(1) == targets.unsqueeze(0)) & ~torch.eye(len(targets), dtype=torch.bool)
    logits = logits.masked_fill(same_target, -torch.inf)
    rows = torch.arange(len(targets))
    return (F.cross_entropy(logits, rows) + F.cross_entropy(logits.T, rows)) / 2


def bpr_loss(users: torch.Tensor, pos_items: torch.Tensor, item_vectors: torch.Tensor, temperature: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Bayesian personalised ranking with one uniform negative per positive."""
    negatives = torch.randint(0, item_vectors.shape[0], (len(pos_items),), generator=generator)
    return pair_bpr_loss(users, item_vectors[pos_items], item_vectors[negatives], temperature)


def pair_bpr_loss(users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                  temperature: torch.Tensor) -> torch.Tensor:
    """BPR given the (B, d) positive and negative item vectors of each row."""
    diff = (users * (positives - negatives)).sum(1) / temperature
    return -F.logsigmoid(diff).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of `a` and row i of `b` are the same item; other rows are negatives."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def alignment_rows(present: torch.Tensor, eligible: torch.Tensor, batch: int,
                   generator: torch.Generator | None = None) -> list[tuple[int, int, torch.Tensor]]:
    """The items each pair of media (x, y) aligns this step: up to `batch` random eligible items having both."""
    pairs = []
    n_media = present.shape[1]
    for x in range(n_media):
        for y in range(x + 1, n_media):
            rows = torch.nonzero(eligible & present[:, x] & present[:, y]).squeeze(1)
            if len(rows) < 2:
                continue
            pairs.append((x, y, rows[torch.randperm(len(rows), generator=generator)[:batch]]))
    return pairs


def cross_media_alignment(media: dict[str, torch.Tensor], present: torch.Tensor, eligible: torch.Tensor,
                          batch: int, temperature: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """InfoNCE between every pair of media of the same items, over `eligible` (train) items that have both.

    Pulls an item's image and audio projections together so a query in one medium retrieves items
    by another, and so one-medium items land where their multi-medium neighbours are.
    """
    return pairs_alignment(media, alignment_rows(present, eligible, batch, generator), temperature)


def pairs_alignment(media: dict[str, torch.Tensor], pairs: list[tuple[int, int, torch.Tensor]], temperature: float,
                    rows_of: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Mean InfoNCE over `alignment_rows`' pairs; `rows_of` maps item ids to rows of `media` (None: same)."""
    names = list(media)
    losses = []
    for x, y, pick in pairs:
        rows = pick if rows_of is None else rows_of(pick)
        losses.append(info_nce(media[names[x]][rows], media[names[y]][rows], temperature))
    return torch.stack(losses).mean() if losses else torch.zeros(())


def log_popularity(counts: torch.Tensor) -> torch.Tensor:
    """log share of train interactions per item (never-seen items count as 1, so log is finite)."""
    counts = counts.clamp(min=1).float()
    return torch.log(counts) - math.log(float(counts.sum()))
