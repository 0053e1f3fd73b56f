"""`recsys ab-report` end to end: simulated logs in, HTML + JSON + Markdown out; bad input gives a
one-line message and a non-zero exit, never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from commands.main import app
from training.ab.simulate import SimulationConfig, write_logs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def srm_logs(tmp_path_factory) -> Path:
    cfg = SimulationConfig(n_users=6_000, ctr_lift={"B": 0.2}, lost_treatment_share=0.12)
    return write_logs(tmp_path_factory.mktemp("srm-logs"), cfg, seed=21)


def invoke(*args: str):
    """In-process CLI call (fast); an exception escaping the command would show up in `exception`."""
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_online_report_writes_html_json_and_markdown(srm_logs, tmp_path):
    out = tmp_path / "report.html"
    run = invoke("ab-report", "--experiment", str(srm_logs), "--out", str(out))
    assert run.exit_code == 0, run.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["kind"] == "online" and {c["metric"] for c in data["comparisons"]} == {"ctr", "conversion_rate"}
    assert data["srm"]["mismatch"] and data["warnings"][0]["code"] == "SRM"  # errors come first
    html = out.read_text()
    assert 'data-code="SRM"' in html and "SAMPLE RATIO MISMATCH" in html and html.count("<svg") == 4
    assert 'id="fig-sequential"' in html
    # The decision leads every output: SRM means nothing can be trusted, so do not ship.
    assert data["decision"] == "dont_ship" and data["reasons"][0].startswith("sample ratio mismatch")
    assert html.index('data-decision="dont_ship"') < html.index('data-code="SRM"')
    md = out.with_suffix(".md").read_text()
    assert md.startswith("**DECISION: DON'T SHIP") and "**SRM**" in md and "| ctr (CUPED) |" in md
    assert run.stdout.startswith("DECISION: DON'T SHIP") and "SRM" in run.stdout and "wrote" in run.stdout


def _bad_logs(tmp_path: Path) -> Path:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "exposures.jsonl").write_text('{"exposure_id": "x1", "ts": 1, "user_id": "u", "variant": "A", "items": []}\n'
                                         '{"exposure_id": \n')
    (bad / "events.jsonl").write_text('{"event_id": "e1", "ts": 2, "user_id": "u", "item_id": "i", "event_type": "click"}\n')
    return bad


@pytest.mark.parametrize("args, message", [
    (["--experiment", "{tmp}/nowhere"], "experiment log directory not found"),
    (["--experiment", "{bad}"], "exposures.jsonl, line 2: invalid JSON"),
    (["--a", "{tmp}/run-a", "--b", "{tmp}/run-b"], "run directory not found"),
])
def test_bad_input_is_a_message_with_non_zero_exit(tmp_path, args, message):
    bad = _bad_logs(tmp_path)
    run = invoke("ab-report", *[a.format(tmp=tmp_path, bad=bad) for a in args], "--out", str(tmp_path / "r.html"))
    assert run.exit_code == 1 and message in run.stderr
    assert not (tmp_path / "r.html").exists()


def test_real_process_prints_no_traceback_for_a_malformed_log(tmp_path):
    """The console script itself (fresh interpreter), as a user would run it."""
    run = subprocess.run([sys.executable, "-m", "commands.main", "ab-report", "--experiment", str(_bad_logs(tmp_path)),
                          "--out", str(tmp_path / "r.html")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr + run.stdout
    assert "exposures.jsonl, line 2" in run.stderr


def test_usage_mistakes_exit_2(tmp_path):
    both = invoke("ab-report", "--experiment", str(tmp_path), "--a", "x", "--b", "y", "--out", str(tmp_path / "r.html"))
    wrong_suffix = invoke("ab-report", "--experiment", str(tmp_path), "--out", str(tmp_path / "r.json"))
    assert both.exit_code == 2 and "--a RUN_A --b RUN_B (offline)" in both.output
    half_ope = invoke("ab-report", "--ope", "--logs", str(tmp_path), "--out", str(tmp_path / "r.html"))
    assert half_ope.exit_code == 2 and "--ope --logs LOG_DIR --policy RUN_DIR" in half_ope.output
    assert wrong_suffix.exit_code == 2 and ".html" in wrong_suffix.output
