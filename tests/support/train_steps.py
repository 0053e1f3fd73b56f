"""A few optimiser steps of a training task on random batches, for tests that only ask "does it learn?"."""
from __future__ import annotations

import torch


def step_losses(task: torch.nn.Module, users: torch.Tensor, items: torch.Tensor, optimizer, epochs: int, steps: int,
                batch: int, seed: int = 0) -> list[float]:
    """Losses of `epochs` x `steps` steps of `batch` random (user, item) pairs; each epoch starts as the trainer's
    does (`begin_epoch`: the sampled step's layer cache; nothing for the full step)."""
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        task.begin_epoch()
        for _ in range(steps):
            rows = torch.randint(0, len(users), (batch,), generator=gen)
            loss, _ = task(users[rows], items[rows], gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    return losses
