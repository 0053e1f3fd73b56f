"""`recsys train`: train the two-tower model and write a run directory.

    recsys train --dataset tiktok --out runs/tiktok            # tuned default configs/tiktok.toml
    recsys train --dataset ml-100k --out runs/ml --set train.lr=0.01 --set model.fusion=gated_attention
    recsys train --dataset tiktok --out runs/tt2 --nproc 2      # 2 processes, TorchRec DMP (gloo on CPU)
    recsys train --dataset tiktok --out runs/tt1 --set train.ensemble=1   # one tower instead of the ensemble

The config comes from, in order: `--config FILE`; `<folder>.toml` beside the dataset folder
(what `recsys tune` writes); `configs/<dataset>.toml`; else the built-in robust recipe
(`training/recipe.py`), sized from the data. The first line printed (and the run's config.toml,
key `origin`) says which.

The dataset's live-catalogue log (items added and taken down while serving,
`<RECSYS_STORE_DIR>/offline/catalogue/<dataset>/ops.jsonl`) is folded in: one line says how many
items came in and went out, from which log (`training.catalogue_fold`).

A checkpoint already in RUN_DIR (same config) is resumed automatically; `--no-resume` refuses
to, `--restart` deletes it first.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import typer


def train_command(
    dataset: str = typer.Option(..., "--dataset", help="Registered dataset (tiktok, ml-100k) or a dataset folder."),
    out: Path = typer.Option(..., "--out", help="Run directory to write (the model artefact)."),
    config: Path | None = typer.Option(None, "--config", help=(
        "TOML config (default: <folder>.toml beside the dataset folder, else configs/<dataset>.toml, else the "
        "built-in robust recipe sized from the data).")),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set train.epochs=5."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from RUN_DIR's checkpoint if any."),
    restart: bool = typer.Option(False, "--restart", help="Delete RUN_DIR's checkpoint and train from scratch."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes (re-launches itself under torchrun)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train with early stopping on valid; print valid/test metrics of the best epoch."""
    from rich.console import Console

    from training.checkpoint import CHECKPOINT_DIR
    from training.export import MEMBERS_DIR

    console = Console()
    if restart:
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
        shutil.rmtree(out / MEMBERS_DIR, ignore_errors=True)
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "training.run",
               "--dataset", dataset, "--out", str(out)]
        cmd += ["--config", str(config)] if config else []
        cmd += [a for o in overrides for a in ("--set", o)]
        cmd += [] if resume else ["--no-resume"]
        cmd += [] if progress else ["--no-progress"]
        raise typer.Exit(subprocess.call(cmd))

    from pydantic import ValidationError

    from training.config import load_config
    from training.distributed import init_distributed, shutdown
    from training.run import train

    try:
        cfg = load_config(config, dataset, overrides)
    except ValidationError as err:
        from training.config import TrainConfig
        from training.config_errors import describe_config_error

        console.print(f"[red]invalid config:[/red] {describe_config_error(err, TrainConfig)}", highlight=False)
        raise typer.Exit(2)
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]invalid config:[/red] {err}")
        raise typer.Exit(2)
    if ctx_is_main():
        console.print(f"config: {cfg.origin}", highlight=False, soft_wrap=True)
    ctx = init_distributed()  # `torchrun ... recsys train ...` works too
    try:
        result = train(cfg, out, resume=resume, progress=progress, ctx=ctx)
    except ValueError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(1)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        m = result.metrics
        for split in ("valid", "test"):
            if m.get(split):
                console.print(f"{split}: Recall@20 {m[split]['recall@20']:.4f}  NDCG@20 {m[split]['ndcg@20']:.4f}  "
                              f"Recall@10 {m[split]['recall@10']:.4f}  NDCG@10 {m[split]['ndcg@10']:.4f}")
        epochs = ", ".join(str(m.state.best_epoch) for m in result.members) or str(result.best_epoch)
        label = f"best epochs {epochs} ({len(result.members)} members)" if len(result.members) > 1 else f"best epoch {epochs}"
        closed = m.get("closed_form")
        if closed and closed["weight"] > 0:
            from training.model_card import member_summary

            label += f" + {member_summary(closed)}"
        console.print(f"{label}, {result.seconds:.0f} s -> {result.run_dir}")


def ctx_is_main() -> bool:
    """Print once under torchrun (rank 0), always in a plain process."""
    import os

    return os.environ.get("RANK", "0") == "0"


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
