"""Off-policy evaluation against a known truth: a simulated world where the logging policies (with
exploration slots) and the candidate run are both served, and every policy's true online click
rate is computed exactly. Through `recsys ab-report --ope --logs LOG_DIR --policy RUN_DIR`."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from commands.main import app
from training.ab.online import analyse_online
from training.ab.ope import analyse_ope
from training.ab.world import WorldConfig, make_world, save_policy, truth, write_logs

SEEDS = range(12)


@pytest.fixture(scope="module")
def world():
    return make_world(WorldConfig(n_users=1_500, lift=0.05), seed=0)


@pytest.fixture(scope="module")
def candidate(world, tmp_path_factory):
    return save_policy(world, "B", tmp_path_factory.mktemp("policy") / "B")


def test_ope_intervals_cover_the_candidates_true_online_value(world, candidate, tmp_path):
    target = truth(world)["B_topk"]  # the candidate serves its own top-k
    covered = {"ips": 0, "snips": 0, "dr": 0}
    for seed in SEEDS:
        report = analyse_ope(write_logs(tmp_path / f"logs-{seed}", world, "ab", seed=100 + seed), candidate)
        assert report.ope["possible"] and not any(w.code == "OPE_SUPPORT" for w in report.warnings)
        assert 0.9 < report.ope["support"]["estimate"] < 1.1 and report.ope["effective_sample_size"] > 500
        for key in covered:
            covered[key] += report.ope[key]["ci_low"] <= target <= report.ope[key]["ci_high"]
    assert all(n >= 0.9 * len(SEEDS) for n in covered.values()), covered


def test_the_simulated_online_experiment_agrees_with_the_exact_truth(world, tmp_path):
    """The same policies served online: the report's per-variant CTR intervals cover the exact values.

    The online report's CTR is clicks per exposure (slate); the truth is per shown item."""
    report = analyse_online(write_logs(tmp_path, world, "ab", seed=5))
    exact = truth(world)
    k = world.cfg.slate_size
    for variant in report.variants:
        ctr = variant.metrics["ctr"]
        assert ctr.low / k <= exact[f"{variant.name}_served"] <= ctr.high / k


def test_deterministic_logs_make_ope_impossible_and_say_so(world, candidate, tmp_path):
    deterministic = make_world(replace(world.cfg, explore_slots=0), seed=0)
    report = analyse_ope(write_logs(tmp_path, deterministic, "ab", seed=2), candidate)
    assert report.ope["possible"] is False and report.ope["ips"] is None and "propensity is 1" in report.ope["reason"]
    assert report.warnings[0].code == "OPE_IMPOSSIBLE" and report.decision == "keep_running"


def test_missing_support_is_warned_about(world, candidate, tmp_path):
    narrow = make_world(replace(world.cfg, explore_pool=30), seed=0)  # exploration only near the logger's own top
    report = analyse_ope(write_logs(tmp_path, narrow, "ab", seed=3), candidate)
    warning = next(w for w in report.warnings if w.code == "OPE_SUPPORT")
    assert "missing support" in warning.message and report.ope["support"]["ci_high"] < 0.95
    assert report.decision == "keep_running"


def test_cli_contract(world, candidate, tmp_path):
    logs = write_logs(tmp_path / "logs", world, "ab", seed=9)
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["ab-report", "--ope", "--logs", str(logs), "--policy", str(candidate),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("DECISION:")
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["decision"] in ("ship", "dont_ship", "keep_running") and data["reasons"]
    for key in ("ips", "snips", "dr"):
        assert set(data["ope"][key]) >= {"estimate", "ci_low", "ci_high"}
        assert data["ope"][key]["ci_low"] < data["ope"][key]["estimate"] < data["ope"][key]["ci_high"]
    assert data["ope"]["effective_sample_size"] > 0
    html = out.read_text()
    assert 'id="ope"' in html and 'id="fig-ope"' in html
    assert "| dr |" in out.with_suffix(".md").read_text()
    missing = CliRunner().invoke(app, ["ab-report", "--ope", "--logs", str(logs), "--policy", str(tmp_path / "nope"),
                                       "--out", str(tmp_path / "x.html")])
    assert missing.exit_code == 1 and "--policy" in missing.stderr and str(tmp_path / "nope") in missing.stderr
