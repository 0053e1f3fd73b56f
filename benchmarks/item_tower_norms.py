"""Lengths of the item tower's parts in a trained single-tower run: ID rows, content vector, base.

Why: item vectors are summed (kNN smoothing, the users' history mean, LightGCN) before they are
L2-normalised, so the relative length of the ID row and the content vector decides which one an item
is. Prints them at init (the run's seed) and at the run's best-on-valid weights (BENCHMARKS.md,
"TikTok: media content in the item tower").

    RECSYS_DATA_DIR=/work/shared/data PYTHONPATH=. .venv/bin/python benchmarks/item_tower_norms.py runs/NAME
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from recsys.artifact import load_tensors
from training.checkpoint import checkpoint_path
from training.config import load_config
from training.data import build_training_data
from training.run import build_task


def describe(task, catalog, tag: str) -> None:
    model = task.model.eval()
    tower = model.item_tower
    with torch.no_grad():
        enc = tower(catalog)
        warm = catalog.has_id
        content = enc.content.norm(dim=1)
        line = [f"[{tag}] temperature {model.temperature.item():.4f}"]
        if model.popularity is not None:
            line.append(f"popularity item slope {model.popularity.item_slope.item():.3f}")
        if hasattr(tower, "content_gate"):
            line.append(f"content gate {tower.content_gate.item():.3f}")
        print(", ".join(line))
        print(f"  content vector: mean length {content.mean():.3f}; per medium: " +
              ", ".join(f"{m} {v.norm(dim=1).mean():.3f}" for m, v in enc.media.items()))
        if tower.id_embedding is not None:
            ids = next(iter(tower.id_embedding.parameters()))
            print(f"  ID rows: warm {ids[warm].norm(dim=1).mean():.3f}, cold {ids[~warm].norm(dim=1).mean():.3f}; "
                  f"|id|/|content| (warm, median) {(ids[warm].norm(dim=1) / content[warm]).median():.3f}; "
                  f"cos(id, content) (warm, mean) "
                  f"{torch.nn.functional.cosine_similarity(ids[warm], enc.content[warm], dim=1).mean():.3f}")
        print(f"  base (layer 0 before kNN): warm {enc.base[warm].norm(dim=1).mean():.3f}, "
              f"cold {enc.base[~warm].norm(dim=1).mean():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a single-tower run directory (train.ensemble = 1)")
    args = parser.parse_args()
    config = load_config(args.run / "config.toml")
    data = build_training_data(config.data)
    task = build_task(config, data)
    describe(task, data.catalog, "init")
    saved = load_tensors(checkpoint_path(args.run))
    task.load_state_dict(saved["state"]["best_model"])
    describe(task, data.catalog, f"best epoch {saved['state']['best_epoch']}")


if __name__ == "__main__":
    main()
