"""Every closed-form member candidate's valid AND test figures on a trained run's towers: how noisy valid's choice is.

    RECSYS_DATA_DIR=../shared/data .venv/bin/python benchmarks/member_candidates.py --run RUN --out grid.json

`recsys train` keeps the candidate (kind, weight, half-life, item form) with the best valid `select_metric` and never
reads test for the others. This analysis scores each candidate of the run's `ease` grid as the served model
(towers + that member, `training.run.served_form` / `evaluate_vectors`, the harness's protocol) on valid and test,
then the towers alone, so that selection rules can be compared after the fact (BENCHMARKS.md, "ML-100K: what the
closed-form member's choice is worth"). It resumes the run's towers from a copy of RUN (nothing is retrained; the
copy's export is rewritten as `recsys train` would) and prints one JSON line per candidate.
Test figures here are for studying the rule, not for choosing a run's member.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training.run as run_module  # noqa: E402
from training.config import load_config  # noqa: E402


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, float)}


def summarise(path: Path, metric: str) -> None:
    """What each selection rule would have served, from a grid file: valid by `metric` (the run's rule), by MRR
    (every user's rank counts, not only top-10 hits), and the item form chosen first by its mean over the grid."""
    rows = json.loads(path.read_text())
    towers = next(r for r in rows if r["kind"] == "towers")
    candidates = [r for r in rows if r["kind"] != "towers"]
    forms = {r["form"] for r in candidates}
    form_mean = {f: sum(r["valid"][metric] for r in candidates if r["form"] == f) /
                 sum(r["form"] == f for r in candidates) for f in forms}
    family = max(form_mean, key=form_mean.get)
    rules = {f"valid {metric} (recsys train)": lambda r: r["valid"][metric], "valid MRR": lambda r: r["valid"]["mrr"],
             f"form by its grid mean, then {metric}": lambda r: (r["form"] == family, r["valid"][metric])}
    print(f"{path}: towers alone valid / test {metric} {towers['valid'][metric]:.4f} / {towers['test'][metric]:.4f}; "
          f"valid grid mean by form " + ", ".join(f"{f} {v:.4f}" for f, v in sorted(form_mean.items())))
    for name, key in rules.items():
        r = max(candidates, key=key)
        print(f"  {name:<34} {r['kind']} {r['form']} {r['weight']:g}@{r['half_life']:g}: valid {r['valid'][metric]:.4f}"
              f"  test {metric} {r['test'][metric]:.4f}, N@20 {r['test']['ndcg@20']:.4f}, R@20 {r['test']['recall@20']:.4f}")
    for form in sorted(forms):
        mean = sum(r["test"][metric] for r in candidates if r["form"] == form) / sum(r["form"] == form for r in candidates)
        print(f"  test {metric} over the grid, {form} form: mean {mean:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summarise", type=Path, nargs="*", help="grid files to compare selection rules on")
    parser.add_argument("--metric", default="ndcg@10")
    args = parser.parse_args()
    if args.summarise:
        for path in args.summarise:
            summarise(path, args.metric)
        return
    if args.run is None or args.out is None:
        parser.error("--run and --out (or --summarise FILES)")
    config = load_config(args.run / "config.toml")
    fit_member, served_form = run_module.fit_closed_form_member, run_module.served_form
    towers: list[Any] = []
    rows: list[dict[str, Any]] = []

    def first_served_form(parts: list[Any], data: Any) -> Any:
        if not towers:  # the first call serves the towers alone: remember them
            towers.extend(parts)
        return served_form(parts, data)

    def every_candidate(cfg: Any, data: Any, users: Any, items: Any, temperatures: Any, ctx: Any) -> Any:
        grid = cfg.ease
        for kind, form, half_life, weight in itertools.product(dict.fromkeys(grid.kinds), grid.item_forms,
                                                               grid.half_lives, [w for w in grid.weights if w > 0]):
            one = grid.model_copy(update={"kinds": [kind], "item_forms": [form], "half_lives": [half_life],
                                          "weights": [weight], "min_gain_se": 0.0, "extend_weights": 0})
            member, report = fit_member(cfg.model_copy(update={"ease": one}), data, users, items, temperatures, ctx)
            u, i, encoder, _ = served_form([*towers, member], data)
            rows.append({"kind": kind, "form": form, "half_life": half_life, "weight": weight,
                         "lambda": report.get("lambda"),
                         "valid": floats(run_module.evaluate_vectors(data, u, i, "valid", ctx, encoder)),
                         "test": floats(run_module.evaluate_vectors(data, u, i, "test", ctx, encoder))})
            print(json.dumps(rows[-1]), flush=True)
        u, i, encoder, _ = served_form(towers, data)
        rows.append({"kind": "towers", "weight": 0.0,
                     "valid": floats(run_module.evaluate_vectors(data, u, i, "valid", ctx, encoder)),
                     "test": floats(run_module.evaluate_vectors(data, u, i, "test", ctx, encoder))})
        args.out.write_text(json.dumps(rows, indent=1))
        return fit_member(cfg, data, users, items, temperatures, ctx)  # the run's own choice, as recsys train makes it

    run_module.fit_closed_form_member = every_candidate
    run_module.served_form = first_served_form
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / args.run.name
        shutil.copytree(args.run, copy)
        run_module.train(config, copy, progress=False)


if __name__ == "__main__":
    main()
