"""A run's model card (`MODEL_CARD.md`) and its saved evaluations (`evaluations/*.json`).

Why: a run directory is handed to people who did not train it (an on-call engineer switching
versions, a reviewer of an A/B test). The card says in one page what the model was trained on,
how it was split, how it scores next to the baselines it was compared with, and what it is known
not to do — from the files in the run itself, so it is rewritten whenever an evaluation is added.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

EVALUATIONS_DIR = "evaluations"
CARD_FILE = "MODEL_CARD.md"
HEADLINE = ("recall@20", "ndcg@20", "recall@10", "ndcg@10", "mrr@10", "coverage@20")


def evaluation_path(run_dir: Path, name: str, task: str, split: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return Path(run_dir) / EVALUATIONS_DIR / f"{safe}.{task}.{split}.json"


def save_evaluation(run_dir: Path, name: str, report: dict[str, Any]) -> Path:
    """Keep one evaluation report beside the run's metrics (`name` = "model" or a baseline's name)."""
    path = evaluation_path(run_dir, name, str(report.get("task", "ranking")), str(report.get("split", "test")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"evaluated": name, "saved_at": time.time(), **report}, indent=2))
    return path


def saved_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    folder = Path(run_dir) / EVALUATIONS_DIR
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def _ranking_table(reports: list[dict[str, Any]], split: str) -> list[str]:
    ranking = [r for r in reports if r.get("task", "ranking") == "ranking" and r.get("split") == split]
    if not ranking:
        return []
    metrics = [m for m in HEADLINE if any(m in r for r in ranking)]
    ranking.sort(key=lambda r: (r["evaluated"] != "model", r["evaluated"]))
    lines = [f"| model | {' | '.join(metrics)} |", "|---|" + "---|" * len(metrics)]
    for r in ranking:
        name = f"**this run** ({r.get('model_version')})" if r["evaluated"] == "model" else r["evaluated"]
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(m)) for m in metrics) + " |")
    return lines


def _task_lines(reports: list[dict[str, Any]], task: str) -> list[str]:
    lines = []
    for r in reports:
        if r.get("task") != task or r["evaluated"] != "model":
            continue
        shown = {k: v for k, v in r.items() if isinstance(v, float) and k != "saved_at"}
        lines.append(f"- {r.get('split')}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in list(shown.items())[:8]))
    return lines


def member_summary(described: dict[str, Any]) -> str:
    """One line for people (the train command's last line, the model card): which closed-form member was kept."""
    kind = described.get("kind", "ease")
    settings = [f"weight {described['weight']:g} chosen on valid"]
    if kind == "ease":
        settings.append(f"lambda {described['lambda']:g}")
    settings.append(f"rank {described['rank']}")
    if described.get("item_form") == "lengths":
        settings.append("item lengths kept")
    return f"a closed-form {'GF-CF' if kind == 'gf-cf' else 'EASE'} member ({', '.join(settings)})"


def write_model_card(run_dir: Path) -> Path:
    """(Re)write `MODEL_CARD.md` from run.json, config.toml, metrics.json and the saved evaluations."""
    import tomllib

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "run.json").read_text())
    config = tomllib.loads((run_dir / "config.toml").read_text()) if (run_dir / "config.toml").exists() else {}
    reports = saved_evaluations(run_dir)
    data, model, train = config.get("data", {}), config.get("model", {}), config.get("train", {})
    out = [f"# Model card: {meta['model_version']}", "",
           "## Data",
           f"- dataset `{meta['dataset']}`, data version `{meta.get('data_version')}`",
           f"- split: `{data.get('split', 'unknown')}`" + (f"; user history window {meta['feature_window']} events"
                                                          if meta.get("feature_window") else ""),
           *(["", "## Model",
              f"- two-tower, dim {model.get('dim')}, fusion `{model.get('fusion')}`, user pooling `{model.get('user_pooling')}`, "
           f"ensemble of {train.get('ensemble', 1)}" + (
               f" + {member_summary(c)}" if (c := meta.get("closed_form")) else ""),
           f"- trained with lr {train.get('lr')}, weight decay {train.get('weight_decay')}, "
           f"epochs chosen on valid `{train.get('select_metric')}`",
           *(["- served as a refit: every member trained again on train + valid for the epochs valid chose "
              "(metrics.json `refit`); valid figures are the selection fit's"]
             if train.get("refit") else [])] if model else [])]
    masked = "train + valid" if train.get("refit") else "train"
    for split in ("test", "valid"):
        table = _ranking_table(reports, split)
        if table:
            out += ["", f"## Ranking on `{split}` (full catalogue, the user's {masked} items masked)", "", *table]
    for task, title in (("cold-start", "Cold start (items unseen in training)"), ("cross-media", "Cross-media retrieval")):
        lines = _task_lines(reports, task)
        if lines:
            out += ["", f"## {title}", *lines]
    out += ["", "## Known limits",
            "- Scores are inner products of L2-normalised vectors; they rank, they are not probabilities.",
            "- Items never seen in training are placed by their content alone; their quality depends on the media the "
            "run was trained with (" + ", ".join(sorted({m for r in reports for m in (r.get("by_media") or {})}) or
                                                  ["see run.json"]) + ").",
            "- Offline figures come from one historical split; an online A/B test is the judge of a change.",
            "", "## Provenance",
            f"- git commit `{meta.get('git_commit')}`, command `{meta.get('command')}`",
            f"- machine {json.dumps(meta.get('machine', {}))}",
            f"- packages {json.dumps(meta.get('packages', {}))}"]
    path = run_dir / CARD_FILE
    path.write_text("\n".join(out) + "\n")
    return path
