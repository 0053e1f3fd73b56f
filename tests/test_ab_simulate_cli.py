"""`recsys ab-simulate`: serving-format logs plus the two policies as run directories and the truth."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from commands.main import app
from recsys.artifact import load_run
from training.ab.logs import read_experiment


def test_ab_simulate_writes_serving_logs_policies_and_truth(tmp_path):
    out = tmp_path / "logs"
    result = CliRunner().invoke(app, ["ab-simulate", "--out", str(out), "--users", "300", "--lift", "0.1", "--seed", "4"])
    assert result.exit_code == 0, result.output
    logs = read_experiment(out)
    assert logs.spec.mode == "ab" and set(logs.spec.guardrails) == {"latency_p99_ms", "error_rate", "coverage",
                                                                     "new_item_share"}
    served = logs.exposures.filter(logs.exposures["status"] < 400)
    assert set(served["variant"].unique()) == {"A", "B"}
    assert (served["propensities"].list.len() == served["items"].list.len()).all()
    assert served["propensities"].list.min().min() < 1.0  # exploration slots: OPE has support
    truth = json.loads((out / "truth.json").read_text())
    assert abs(truth["ctr"]["B_served"] / truth["ctr"]["A_served"] - 1.1) < 0.005
    for name in ("A", "B"):
        run = load_run(out / "policies" / name)
        assert run.item_vectors.shape[0] == 300 and run.users.height == 300


def test_bad_options_are_usage_errors(tmp_path):
    bad_mode = CliRunner().invoke(app, ["ab-simulate", "--out", str(tmp_path), "--mode", "split"])
    bad_lift = CliRunner().invoke(app, ["ab-simulate", "--out", str(tmp_path), "--lift", "3"])
    assert bad_mode.exit_code == 2 and "split" in bad_mode.output
    assert bad_lift.exit_code == 2 and "--lift" in bad_lift.output
