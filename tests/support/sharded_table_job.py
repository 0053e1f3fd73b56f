"""Run under `torchrun --nproc_per_node 2`: plan and train one step of a catalogue-sized ID table.

Writes OUT_DIR/rank-<r>.json per rank: the plan rank 0 chose (`training.distributed.describe_plan`), the
shape of this rank's local shard, and the loss (equal on every rank when the shards agree).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel

from training.distributed import describe_plan, init_distributed, plan_sharding, shutdown


class ItemTable(torch.nn.Module):
    def __init__(self, rows: int, dim: int):
        super().__init__()
        # meta device: nothing is allocated until DMP materialises this rank's shard only
        self.ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
            name="item_id_table", embedding_dim=dim, num_embeddings=rows, feature_names=["item"])],
            device=torch.device("meta"))

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.ebc(kjt)["item"].pow(2).sum()


def main() -> None:
    ctx = init_distributed()
    rows, dim = int(os.environ["ROWS"]), int(os.environ["DIM"])
    model = ItemTable(rows, dim)
    plan = plan_sharding(model, ctx.world_size, "cpu", dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=torch.device("cpu"), plan=plan,
                                   sharders=[EmbeddingBagCollectionSharder()])
    ids = torch.tensor([0, rows - 1, 7, rows // 2, 12345])
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["item"], values=ids, lengths=torch.tensor([2, 3]))
    loss = dmp(kjt)
    loss.backward()
    weight = dmp.state_dict()["ebc.embedding_bags.item_id_table.weight"]
    local = weight.local_shards()[0].tensor.shape if hasattr(weight, "local_shards") else weight.shape
    report = {"rank": ctx.rank, "plan": describe_plan(plan), "local_shard": list(local), "loss": float(loss.detach())}
    # one file per rank: two processes printing at once can interleave on one stdout line
    (Path(os.environ["OUT_DIR"]) / f"rank-{ctx.rank}.json").write_text(json.dumps(report))
    # barrier, then destroy (training's own shutdown): destroying the group while the other rank still has
    # gloo work in flight aborted a process at exit once ("terminate called without an active exception")
    shutdown(ctx)


if __name__ == "__main__":
    main()
    # The report is written and the group destroyed; leave without running C++ static destructors. A gloo
    # thread torn down at interpreter exit still aborted a rank ("terminate called without an active exception",
    # exit -6) in CI on 2026-12-05 after the barrier-then-destroy above, with every result already on disk.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
