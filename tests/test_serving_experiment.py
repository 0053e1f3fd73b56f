"""A/B assignment and the durable logs the A/B report reads."""
from __future__ import annotations

import json

import pytest

from serving.experiment import Experiment
from serving.exposure_log import EXPOSURES, JsonlLog


@pytest.mark.parametrize("split_b", [0.5, 0.1, 0.9])
def test_assignment_is_deterministic_and_matches_the_split(split_b):
    experiment = Experiment("feed-ab", "salt-1", {"A": 1 - split_b, "B": split_b})
    users = [str(u) for u in range(20_000)]
    first = [experiment.assign(u) for u in users]
    assert first == [Experiment("feed-ab", "salt-1", {"A": 1 - split_b, "B": split_b}).assign(u) for u in users]
    share_b = first.count("B") / len(users)
    assert abs(share_b - split_b) < 0.015, share_b


def test_a_new_salt_reshuffles_users():
    users = [str(u) for u in range(5000)]
    a = [Experiment("x", "salt-1", {"A": 0.5, "B": 0.5}).assign(u) for u in users]
    b = [Experiment("x", "salt-2", {"A": 0.5, "B": 0.5}).assign(u) for u in users]
    assert 0.4 < sum(x != y for x, y in zip(a, b)) / len(users) < 0.6


def test_single_variant_gets_everyone():
    assert {Experiment("x", "s", {"A": 1.0}).assign(str(u)) for u in range(1000)} == {"A"}


def test_manifest_keeps_its_start_time_until_the_experiment_changes(tmp_path):
    experiment = Experiment("feed-ab", "s", {"A": 0.5, "B": 0.5})
    first = json.loads(experiment.write_manifest(tmp_path).read_text())
    assert set(first) == {"name", "variants", "start_ts", "mode"} and first["variants"] == {"A": 0.5, "B": 0.5}
    assert json.loads(experiment.write_manifest(tmp_path).read_text())["start_ts"] == first["start_ts"]
    changed = json.loads(Experiment("feed-ab", "s", {"A": 0.8, "B": 0.2}).write_manifest(tmp_path).read_text())
    assert changed["start_ts"] >= first["start_ts"] and changed["variants"] == {"A": 0.8, "B": 0.2}


def test_log_lines_reach_disk_in_order_and_close_drains_the_queue(tmp_path):
    logs = JsonlLog(tmp_path, flush_ms=5, batch=7)
    for n in range(100):
        logs.write(EXPOSURES, {"n": n})
    assert logs.flush()
    assert len((tmp_path / EXPOSURES).read_text().splitlines()) == 100
    for n in range(100, 150):
        logs.write(EXPOSURES, {"n": n})
    logs.close()
    assert [json.loads(line)["n"] for line in (tmp_path / EXPOSURES).read_text().splitlines()] == list(range(150))


def test_manifest_keeps_hand_declared_guardrails_and_records_the_mode(tmp_path):
    path = Experiment("feed-ab", "s", {"A": 0.5, "B": 0.5}).write_manifest(tmp_path)
    declared = {**json.loads(path.read_text()), "guardrails": {"error_rate": {"max": 0.01}}, "catalogue_size": 6710}
    path.write_text(json.dumps(declared))
    rewritten = json.loads(Experiment("feed-ab", "s", {"A": 0.5, "B": 0.5}, "interleave").write_manifest(tmp_path).read_text())
    assert rewritten["guardrails"] == {"error_rate": {"max": 0.01}} and rewritten["catalogue_size"] == 6710
    assert rewritten["mode"] == "interleave" and rewritten["start_ts"] >= declared["start_ts"]


def test_interleaving_is_reproducible_per_request_and_needs_two_variants():
    experiment = Experiment("feed-il", "s", {"A": 0.5, "B": 0.5}, "interleave")
    ranked = {"A": [f"a{i}" for i in range(10)], "B": [f"b{i}" for i in range(10)]}
    first = experiment.interleave("u1", "req-1", ranked, 6)
    assert first == experiment.interleave("u1", "req-1", ranked, 6)
    assert len({tuple(experiment.interleave("u1", f"req-{n}", ranked, 6)[1]) for n in range(50)}) > 1
    items, teams = first
    assert all(i.startswith(t.lower()) for i, t in zip(items, teams)) and teams.count("A") == 3
    with pytest.raises(ValueError, match="exactly two variants"):
        Experiment("x", "s", {"A": 1.0}, "interleave")
