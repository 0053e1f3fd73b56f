"""Multi-process training under `torchrun`: process group + TorchRec DistributedModelParallel.

Each rank runs the training step (the full-graph one on small catalogues, the sampled one that
looks up its batch's ids only on large ones: `recsys.models.task`) and the loss on its slice of the
global batch; DMP shards the EmbeddingBagCollections (data-parallel by default: the tables are
small, so replicating them beats all-to-all traffic) and wraps the dense part in DDP, so gradients
are averaged and every rank holds identical weights after each step. A table of
`ROW_WISE_MIN_ROWS` rows or more (a 10M-item catalogue) is split across the ranks instead:
replicating 10M x 64 floats (2.5 GB) on every rank, and all-reducing its gradient, is what does not
scale (row-wise on GPUs, column-wise on CPU: `sharding_type_for`). Without torchrun the job runs the plain module in-process.

Several machines: the same command under torchrun's rendezvous (README, "Multi-node training"):

    torchrun --nnodes 2 --nproc_per_node 8 --node_rank R --rdzv_backend c10d \
        --rdzv_endpoint HOST:29500 -m commands.main train --dataset D --out RUN
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


def _topology(world_size: int, compute_device: str) -> Any:
    """The planner's topology, through TopologyFactory where this TorchRec has it (it warns otherwise)."""
    from torchrec.distributed.planner import types

    if hasattr(types, "TopologyFactory"):
        return types.TopologyFactory.create_topology(trainer_config=types.TrainerConfig(world_size=world_size),
                                                     kernel_config=types.KernelConfig(compute_device=compute_device))
    return types.Topology(world_size=world_size, compute_device=compute_device)


ROW_WISE_MIN_ROWS = 1_000_000


def sharding_type_for(num_embeddings: int, world_size: int, device_type: str = "cpu") -> str:
    """data_parallel for tables that fit on every rank; catalogue-sized ones are split across ranks.

    Split by rows on GPUs (each rank owns a slice of the items: lookups all-to-all, memory / N).
    TorchRec's CPU kernels offer no row-wise sharding (its CPU sharders allow data_parallel,
    table_wise, column_wise, table_column_wise), so on CPU the split is by columns: each rank holds
    all rows of dim / N columns, which divides the memory the same way.
    """
    if world_size <= 1 or num_embeddings < ROW_WISE_MIN_ROWS:
        return "data_parallel"
    return "row_wise" if device_type == "cuda" else "column_wise"


def _tables(module: nn.Module) -> dict[str, tuple[int, int]]:
    from torchrec import EmbeddingBagCollection

    return {t.name: (t.num_embeddings, t.embedding_dim) for m in module.modules() if isinstance(m, EmbeddingBagCollection)
            for t in m.embedding_bag_configs()}


def plan_sharding(module: nn.Module, world_size: int, device_type: str = "cpu", group: Any = None) -> Any:
    """TorchRec's sharding plan for `module` with each table's type chosen by `sharding_type_for`.

    With a process group the ranks agree on one plan (`collective_plan`); without one it is planned
    locally (what `describe_plan` shows before a job starts).
    """
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints

    constraints = {}
    for name, (rows, dim) in _tables(module).items():
        kind = sharding_type_for(rows, world_size, device_type)
        # column-wise: one slice of dim / N columns per rank (the planner's default slice is 128 wide)
        extra = {"min_partition": max(dim // world_size, 1)} if kind == "column_wise" else {}
        constraints[name] = ParameterConstraints(sharding_types=[kind], **extra)
    planner = EmbeddingShardingPlanner(topology=_topology(world_size, device_type), constraints=constraints)
    sharders = [EmbeddingBagCollectionSharder()]
    if group is not None:
        return planner.collective_plan(module, sharders, group)
    return planner.plan(module, sharders)


def describe_plan(plan: Any) -> dict[str, dict[str, Any]]:
    """{table: {sharding_type, shards: [{rank, size: [rows, cols], offset: [row, col]}]}} of a plan (JSON-able)."""
    out: dict[str, dict[str, Any]] = {}
    for module_plan in plan.plan.values():
        for table, spec in module_plan.items():
            shards = []
            if spec.sharding_spec is not None:
                for shard in spec.sharding_spec.shards:
                    shards.append({"rank": shard.placement.rank(), "size": [int(x) for x in shard.shard_sizes],
                                   "offset": [int(x) for x in shard.shard_offsets]})
            else:  # replicated (data_parallel): the whole table on each rank
                shards = [{"rank": r, "size": None, "offset": None} for r in (spec.ranks or [])]
            out[table] = {"sharding_type": spec.sharding_type, "shards": shards}
    return out


def wrap_model(task: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedModelParallel around the training task (identity when not distributed)."""
    if not ctx.is_distributed:
        return task
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel

    device = torch.device("cuda", ctx.rank % torch.cuda.device_count()) if torch.cuda.is_available() else torch.device("cpu")
    sharders = [EmbeddingBagCollectionSharder()]
    plan = plan_sharding(task, ctx.world_size, device.type, dist.GroupMember.WORLD)
    # Some parameters (e.g. the alignment-only paths) may skip a step: let DDP tolerate that.
    wrapper = DefaultDataParallelWrapper(static_graph=False, find_unused_parameters=True)
    return DistributedModelParallel(task, device=device, plan=plan, sharders=sharders, data_parallel_wrapper=wrapper)


def unwrap(model: nn.Module) -> nn.Module:
    """The training task inside a DMP wrapper (or the module itself)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedModelParallel" else model
