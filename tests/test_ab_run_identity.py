"""Offline A/B refuses runs that cannot be paired, and says "A/A" when a run meets itself.

Issue 15: `recsys ab-report --a RUN_TIKTOK --b RUN_ML100K` paired the users whose numeric ids
happened to match and declared B better on every metric. Real run directories (TikTok's real
features, ML-100K) through the real CLI.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.main import app
from tests.support.sample_runs import movielens_text_run, tiktok_mean_pool_run
from training.ab.offline import METRICS, OfflineConfig, compare_frames
from training.ab.render import console_lines


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    ml = movielens_text_run(root / "ml100k", embed=False)
    ml_again = movielens_text_run(root / "ml100k-again", model_version="ml100k-minilm-2", embed=False)
    tiktok = tiktok_mean_pool_run(root / "tiktok")
    other_version = root / "ml100k-other-version"
    shutil.copytree(ml, other_version)
    meta = json.loads((other_version / "run.json").read_text())
    (other_version / "run.json").write_text(json.dumps({**meta, "data_version": "0000000000000000"}))
    return {"ml": ml, "ml_again": ml_again, "tiktok": tiktok, "other_version": other_version}


def _report(a, b, out):
    return CliRunner().invoke(app, ["ab-report", "--a", str(a), "--b", str(b), "--split", "test", "--out", str(out)])


@pytest.mark.parametrize("pair, message", [
    (("tiktok", "ml"), "their datasets differ"),
    (("ml", "other_version"), "their data versions differ"),
])
def test_runs_of_different_data_are_refused_with_one_line(runs, tmp_path, pair, message):
    result = _report(runs[pair[0]], runs[pair[1]], tmp_path / "r.html")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "runs are not comparable" in result.stderr and message in result.stderr.replace("\n", " ")
    assert len(" ".join(lines)) < 400 and "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("pair", [("ml", "ml"), ("ml", "ml_again")])
def test_a_run_against_itself_is_called_an_a_a_comparison(runs, tmp_path, pair):
    result = _report(runs[pair[0]], runs[pair[1]], tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    assert "A/A comparison" in result.stdout
    assert "power unknown" not in result.stdout and "UNDERPOWERED" not in result.stdout
    assert "nan" not in result.stdout.lower()
    data = json.loads((tmp_path / "r.json").read_text())
    assert [w["code"] for w in data["warnings"]] == ["AA"]
    assert {c["diff"] for c in data["comparisons"]} == {0.0}


def test_console_never_prints_nan_for_an_undefined_lift():
    """A metric that is zero for every control user has no relative lift: '—', not '+nan%'."""
    rng = np.random.default_rng(0)
    n = 200
    cols = {m: rng.random(n) for m in METRICS}
    a = pl.DataFrame({"user_id": [f"u{i}" for i in range(n)], **cols, "mrr": np.zeros(n)})
    b = pl.DataFrame({"user_id": [f"u{i}" for i in range(n)], **{m: v + rng.normal(0.01, 0.05, n) for m, v in cols.items()},
                      "mrr": rng.random(n) * 0.01})
    lines = console_lines(compare_frames(a, b, "a", "b", "test", OfflineConfig(n_resamples=200)))
    mrr = next(line for line in lines if line.startswith("mrr"))
    assert "nan" not in " ".join(lines).lower() and "—" in mrr
