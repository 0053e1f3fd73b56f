"""Multi-process training under `torchrun`: process group + TorchRec DistributedModelParallel.

Each rank runs the full-graph forward (the catalogue is small) and the loss on its slice of the
global batch; DMP shards the EmbeddingBagCollections (data-parallel by default: the tables are
small, so replicating them beats all-to-all traffic) and wraps the dense part in DDP, so gradients
are averaged and every rank holds identical weights after each step. Without torchrun the job
runs the plain module in-process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistContext:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size())


def shutdown(ctx: DistContext) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def broadcast(value: Any, ctx: DistContext) -> Any:
    """Rank 0's `value` on every rank (decisions such as early stopping must agree)."""
    if not ctx.is_distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def weights_digest(module: nn.Module) -> str:
    """sha256 of every tensor in the state dict (name, dtype, bytes): equal digests = identical weights."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def gather(value: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `value`, in rank order (a one-element list when not distributed)."""
    if not ctx.is_distributed:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def _table_names(module: nn.Module) -> list[str]:
    from torchrec import EmbeddingBagCollection

    return [t.name for m in module.modules() if isinstance(m, EmbeddingBagCollection) for t in m.embedding_bag_configs()]


def _topology(world_size: int, compute_device: str) -> Any:
    """The planner's topology, through TopologyFactory where this TorchRec has it (it warns otherwise)."""
    from torchrec.distributed.planner import types

    if hasattr(types, "TopologyFactory"):
        return types.TopologyFactory.create_topology(trainer_config=types.TrainerConfig(world_size=world_size),
                                                     kernel_config=types.KernelConfig(compute_device=compute_device))
    return types.Topology(world_size=world_size, compute_device=compute_device)


def wrap_model(task: nn.Module, ctx: DistContext, sharding: str = "data_parallel") -> nn.Module:
    """DistributedModelParallel around the training task (identity when not distributed)."""
    if not ctx.is_distributed:
        return task
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints

    device = torch.device("cuda", ctx.rank % torch.cuda.device_count()) if torch.cuda.is_available() else torch.device("cpu")
    constraints = {name: ParameterConstraints(sharding_types=[sharding]) for name in _table_names(task)}
    planner = EmbeddingShardingPlanner(topology=_topology(ctx.world_size, device.type), constraints=constraints)
    sharders = [EmbeddingBagCollectionSharder()]
    plan = planner.collective_plan(task, sharders, dist.GroupMember.WORLD)
    # Some parameters (e.g. the alignment-only paths) may skip a step: let DDP tolerate that.
    wrapper = DefaultDataParallelWrapper(static_graph=False, find_unused_parameters=True)
    return DistributedModelParallel(task, device=device, plan=plan, sharders=sharders, data_parallel_wrapper=wrapper)


def unwrap(model: nn.Module) -> nn.Module:
    """The training task inside a DMP wrapper (or the module itself)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedModelParallel" else model
