"""Offline A/B between two runs: users paired by id, planted lift recovered, segments as documented.

Per-user frames follow the `training.evaluation.per_user_metrics` contract; they are synthetic so
the true difference is known.
"""
from __future__ import annotations

import json
import re
import sys
import types

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from commands.main import app
from training.ab.errors import ReportInputError
from training.ab.offline import METRICS, OfflineConfig, compare_frames, load_per_user

PLANTED = {"ndcg@10": 0.02, "recall@20": 0.03}


def per_user_frames(n: int = 3_000, seed: int = 0, planted: dict[str, float] = PLANTED) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Two runs on the same users: a shared per-user difficulty plus model noise; B gains `planted`."""
    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in range(n)]
    n_train = rng.geometric(1 / 30, n) - 1
    media = rng.choice(np.array(["text", "image", "audio", None], dtype=object), n, p=[0.4, 0.3, 0.2, 0.1])
    difficulty = rng.beta(1.5, 3.0, n)
    frames = []
    for run in ("a", "b"):
        cols = {m: difficulty * (0.6 + 0.1 * k) + rng.normal(0, 0.08, n) + (planted.get(m, 0.0) if run == "b" else 0.0)
                for k, m in enumerate(METRICS)}
        frames.append(pl.DataFrame({"user_id": users, "n_train": n_train, "media": pl.Series(media, dtype=pl.String), **cols}))
    return frames[0], frames[1].sample(fraction=1.0, shuffle=True, seed=1)  # row order must not matter


@pytest.fixture(scope="module")
def report():
    a, b = per_user_frames()
    return compare_frames(a, b, "runs/a", "runs/b", "test")


def test_planted_lift_is_detected_and_its_paired_ci_covers_it(report):
    by_metric = {c.metric: c for c in report.comparisons}
    for metric, delta in PLANTED.items():
        c = by_metric[metric]
        assert c.p_value < 0.05 and c.verdict(report.alpha) == "better"
        assert c.ci_low <= delta <= c.ci_high
    for metric in set(METRICS) - set(PLANTED):
        assert by_metric[metric].ci_low <= 0 <= by_metric[metric].ci_high
    assert all(c.n_control == 3_000 and c.p_adjusted >= c.p_value for c in report.comparisons)


def test_segments_follow_the_documented_thresholds(report):
    a, _ = per_user_frames()
    expected = {"new users (n_train 0-4)": a.filter(pl.col("n_train") < 5).height,
                "light users (n_train 5-49)": a.filter(pl.col("n_train").is_between(5, 49)).height,
                "heavy users (n_train 50+)": a.filter(pl.col("n_train") >= 50).height,
                "media: unknown": a["media"].null_count()}
    sizes = {c.segment: c.n_control for c in report.segments if c.metric == "ndcg@10"}
    assert {k: sizes[k] for k in expected} == expected
    assert [s.split()[0] for s in list(sizes)[:3]] == ["new", "light", "heavy"]
    heavy = next(c for c in report.segments if c.segment.startswith("heavy") and c.metric == "ndcg@10")
    assert heavy.ci_low <= PLANTED["ndcg@10"] <= heavy.ci_high


def test_runs_on_different_users_are_paired_on_the_common_ones():
    a, b = per_user_frames(n=400)
    report = compare_frames(a, b.filter(pl.col("user_id") != "u0").head(350), "a", "b", "test",
                            OfflineConfig(n_resamples=200))
    assert any(w.code == "UNPAIRED" for w in report.warnings)
    assert report.comparisons[0].n_control == 350


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ReportInputError, match="run directory not found"):
        load_per_user(tmp_path / "missing", "test")
    a, _ = per_user_frames(n=50)
    with pytest.raises(ReportInputError, match="duplicate user_id"):
        compare_frames(pl.concat([a, a.head(1)]), a, "a", "b", "test")
    with pytest.raises(ReportInputError, match="no common metric"):
        compare_frames(a.select("user_id"), a, "a", "b", "test")


def test_cli_offline_report_end_to_end(tmp_path, monkeypatch):
    """Through `recsys ab-report --a --b`, with a stand-in for the evaluation package's contract."""
    a, b = per_user_frames(n=800)
    runs = {"run-a": a, "run-b": b}
    stub = types.ModuleType("training.evaluation")
    stub.per_user_metrics = lambda run_dir, split: runs[run_dir.name]
    monkeypatch.setitem(sys.modules, "training.evaluation", stub)
    for name in runs:
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"dataset": "synthetic", "data_version": "v1"}))
    out = tmp_path / "out" / "offline.html"
    result = CliRunner().invoke(app, ["ab-report", "--a", str(tmp_path / "run-a"), "--b", str(tmp_path / "run-b"),
                                      "--split", "test", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["kind"] == "offline" and len(data["comparisons"]) == len(METRICS) and data["segments"]
    assert {c["verdict"] for c in data["comparisons"] if c["metric"] in PLANTED} == {"better"}
    html = out.read_text()
    assert html.count("<svg") >= 3  # metric bars, lift forest, segment deltas
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # self-contained: no CDN, no remote asset
    assert "| ndcg@10 |" in out.with_suffix(".md").read_text()
