"""`recsys compare`: the run and its baselines in one table, every report saved beside the run, a model card."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.sample_runs import tiktok_mean_pool_run

REPO = Path(__file__).resolve().parents[1]


def test_compare_prints_one_table_and_saves_reports_and_card(tmp_path):
    run = tiktok_mean_pool_run(tmp_path / "run")
    done = subprocess.run([sys.executable, "-m", "commands.main", "compare", "--run", str(run), "--baselines", "most-popular",
                           "--tasks", "cold-start"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "160"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if "│" in line and ("this run" in line or "most-popular" in line)]
    assert len(table) == 2 and all("0." in line for line in table)
    saved = {p.name for p in (run / "evaluations").glob("*.json")}
    assert saved == {"model.ranking.test.json", "most-popular.ranking.test.json", "model.cold-start.test.json"}
    model = json.loads((run / "evaluations" / "model.ranking.test.json").read_text())
    popular = json.loads((run / "evaluations" / "most-popular.ranking.test.json").read_text())
    card = (run / "MODEL_CARD.md").read_text()
    assert f"{model['recall@20']:.4f}" in card and f"{popular['recall@20']:.4f}" in card
    assert "## Cold start" in card and "git commit" in card


def test_compare_names_an_unknown_baseline(tmp_path):
    run = tiktok_mean_pool_run(tmp_path / "run")
    done = subprocess.run([sys.executable, "-m", "commands.main", "compare", "--run", str(run), "--baselines", "no-such"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "unknown baseline" in done.stderr and "Traceback" not in done.stderr
