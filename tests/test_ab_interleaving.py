"""Team-draft interleaving: the pure function serving uses, the report's preference, and the
sensitivity claim (far fewer users than an A/B test of the same pair), on one simulated world."""
from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from commands.main import app
from recsys.interleaving import credit, team_draft
from training.ab.world import WorldConfig, make_world, sensitivity


def test_team_draft_mixes_both_rankings_fairly_and_in_order():
    a = [f"i{n}" for n in range(20)]
    b = [f"i{n}" for n in (5, 3, 30, 31, 0, 32, 33, 34, 35, 36)]
    counts = {"A": 0, "B": 0}
    first_slot = {"A": 0, "B": 0}
    for seed in range(400):
        items, teams = team_draft(a, b, 10, random.Random(seed))
        assert len(items) == 10 == len(set(items)) and len(teams) == 10
        assert abs(teams.count("A") - teams.count("B")) <= 1  # captains alternate: balanced teams
        for team, ranking in (("A", a), ("B", b)):  # each team contributes its items in its own order
            mine = [i for i, t in zip(items, teams) if t == team]
            assert mine == sorted(mine, key=ranking.index)
        counts["A"] += teams.count("A")
        counts["B"] += teams.count("B")
        first_slot[teams[0]] += 1
    assert counts["A"] == counts["B"]
    assert 150 < first_slot["A"] < 250  # the coin decides who goes first
    assert team_draft(a, b, 10, random.Random(3)) == team_draft(a, b, 10, random.Random(3))  # reproducible per seed


def test_team_draft_handles_short_and_identical_rankings():
    items, teams = team_draft(["x", "y"], ["y"], 5, random.Random(0))
    assert sorted(items) == ["x", "y"] and len(teams) == 2
    same, _ = team_draft(["p", "q", "r"], ["p", "q", "r"], 3, random.Random(1))
    assert same == ["p", "q", "r"]  # identical rankings: the user sees the same list
    assert credit([True, False, True], ["A", "B", "B"]) == (1, 1)


@pytest.fixture(scope="module")
def world():
    return make_world(WorldConfig(n_users=4_000, lift=0.05), seed=0)


def test_interleaving_needs_far_fewer_users_than_the_ab_test_of_the_same_pair(world):
    result = sensitivity(world, seed=1)
    assert result.preference > 0 and abs(result.true_lift - 0.05) < 0.002
    assert result.ratio >= 5, result  # typically 10-25x in this world


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_same_users_interleaved_reach_significance_where_the_ab_test_does_not(tmp_path):
    """`recsys ab-simulate` + `recsys ab-report` on 3,000 users of the same world and pair."""
    for mode in ("ab", "interleave"):
        _cli("ab-simulate", "--out", str(tmp_path / mode), "--users", "3000", "--lift", "0.05", "--mode", mode,
             "--seed", "1")
        _cli("ab-report", "--experiment", str(tmp_path / mode), "--out", str(tmp_path / f"{mode}.html"))
    interleaved = json.loads((tmp_path / "interleave.json").read_text())
    ab = json.loads((tmp_path / "ab.json").read_text())
    il = interleaved["interleaving"]
    assert {"preference", "ci_low", "ci_high", "p_value"} <= set(il)
    assert il["p_value"] < 0.05 and il["ci_low"] > 0 and il["users"] == 3000
    assert abs(il["slot_share"]["A"] - 0.5) < 0.01
    assert interleaved["decision"] == "ship"
    ctr = next(c for c in ab["comparisons"] if c["metric"] == "ctr")
    assert ctr["p_value"] > 0.05 and ab["decision"] == "keep_running"
    html = (tmp_path / "interleave.html").read_text()
    assert 'id="interleaving"' in html and 'id="fig-interleaving"' in html
