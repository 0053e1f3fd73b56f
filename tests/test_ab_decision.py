"""The decision line: guardrails declared per experiment can veto a winning treatment, an
unmeasurable guardrail blocks "ship", and a significantly worse treatment is not shipped."""
from __future__ import annotations

import json
import shutil

import pytest

from training.ab.errors import ReportInputError
from training.ab.online import analyse_online
from training.ab.world import WorldConfig, make_world, write_logs


@pytest.fixture(scope="module")
def winning_logs(tmp_path_factory):
    """B is 30 % better; simulated latency p99 is ~130 ms, error rate ~0.2 %."""
    world = make_world(WorldConfig(n_users=3_000, lift=0.3), seed=2)
    return write_logs(tmp_path_factory.mktemp("win") / "logs", world, "ab", seed=4)


def _with_spec(src, dst, **changes):
    shutil.copytree(src, dst)
    spec = json.loads((dst / "experiment.json").read_text())
    spec.update(changes)
    (dst / "experiment.json").write_text(json.dumps(spec))
    return dst


def test_a_clear_winner_within_its_guardrails_ships(winning_logs):
    report = analyse_online(winning_logs)
    data = report.to_dict()
    assert data["decision"] == "ship" and "significantly better for B" in data["reasons"][0]
    assert {g["status"] for g in data["guardrails"]} == {"pass"} and len(data["guardrails"]) == 8


def test_a_failed_guardrail_vetoes_the_winner(winning_logs, tmp_path):
    logs = _with_spec(winning_logs, tmp_path / "slow", guardrails={"latency_p99_ms": {"max": 50}})
    report = analyse_online(logs)
    assert report.decision == "dont_ship"
    assert any(r.startswith("guardrail latency_p99_ms failed for B") for r in report.reasons)
    assert "significantly better for B" in report.reasons[0]  # the goal metric is still reported


def test_a_guardrail_the_logs_cannot_measure_blocks_ship(winning_logs, tmp_path):
    logs = _with_spec(winning_logs, tmp_path / "unmeasured", guardrails={"new_item_share": {"min": 0.01}})
    lines = [json.loads(line) for line in (logs / "exposures.jsonl").read_text().splitlines()]
    (logs / "exposures.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "new_items"}) + "\n"
                                                  for r in lines))
    report = analyse_online(logs)
    assert report.decision == "keep_running"
    assert any("new_item_share is declared but the logs do not measure it for B" in r for r in report.reasons)


def test_a_significantly_worse_treatment_is_not_shipped(tmp_path):
    world = make_world(WorldConfig(n_users=3_000, lift=-0.25), seed=2)
    report = analyse_online(write_logs(tmp_path, world, "ab", seed=4))
    assert report.decision == "dont_ship" and "significantly worse for B" in report.reasons[0]


def test_unknown_guardrails_are_refused_with_the_file_named(winning_logs, tmp_path):
    logs = _with_spec(winning_logs, tmp_path / "bad", guardrails={"p99": {"max": 1}})
    with pytest.raises(ReportInputError, match=r"experiment.json: unknown guardrail 'p99'"):
        analyse_online(logs)
