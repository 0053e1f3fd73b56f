"""`recsys ab-simulate`: serving-format logs of a simulated experiment with a planted quality difference.

    recsys ab-simulate --out LOG_DIR [--users N] [--lift L] [--mode ab|interleave] [--seed S]

Writes what the serving layer writes (exposures.jsonl with propensities or teams and guardrail
fields, events.jsonl, experiment.json), plus the two policies as run directories
(`LOG_DIR/policies/A`, `.../B`, candidates for `recsys ab-report --ope`) and `truth.json` (each
policy's true online click rate), so every report can be checked against the truth.
"""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console


class Mode(str, Enum):
    ab = "ab"
    interleave = "interleave"


def ab_simulate(
    out: Path = typer.Option(..., "--out", help="Log directory to write (created if missing)."),
    users: int = typer.Option(4_000, "--users", min=10, max=2_000_000, help="Simulated users."),
    lift: float = typer.Option(0.05, "--lift", min=-0.5, max=0.5, help="B's relative click-rate change over A "
                               "(0.05 = +5 %; 0 = an A/A test)."),
    mode: Mode = typer.Option(Mode.ab, "--mode", help="ab: users split between A and B; interleave: team-draft slates."),
    seed: int = typer.Option(0, "--seed", help="Seed of the world and of the traffic."),
) -> None:
    """Simulate an experiment: a latent-factor world, two ranking policies with a planted lift, served traffic."""
    from training.ab.world import WorldConfig, make_world, save_policy, truth, write_logs

    err = Console(stderr=True)
    try:
        world = make_world(WorldConfig(n_users=users, lift=lift), seed=seed)
    except ValueError as problem:
        err.print(f"[red]ab-simulate: {problem}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    try:
        write_logs(out, world, mode.value, seed=seed + 1)
        for name in world.policies:
            save_policy(world, name, out / "policies" / name)
        (out / "truth.json").write_text(json.dumps({"lift": lift, "mode": mode.value, "seed": seed, "users": users,
                                                    "ctr": truth(world)}, indent=2))
    except OSError as problem:
        err.print(f"[red]ab-simulate: cannot write {out}: {problem}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    Console().print(f"[green]wrote[/green] {out} ({mode.value}, {users:,} users, lift {lift:+.1%})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("ab-simulate")(ab_simulate)
