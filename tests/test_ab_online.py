"""Online A/B analysis from serving logs: attribution, planted lift and SRM, and input errors that
name the file and line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.ab.errors import ReportInputError
from training.ab.logs import read_experiment
from training.ab.online import analyse_online, attributed_clicks, user_table
from training.ab.simulate import SimulationConfig, true_metrics, write_logs


def _write(path: Path, rows: list[dict | str]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _exposure(eid: str, ts: float, user: str, variant: str, items: list[str]) -> dict:
    return {"exposure_id": eid, "ts": ts, "user_id": user, "variant": variant, "model_version": "m1", "items": items}


def _event(eid: str, ts: float, user: str, item: str, kind: str = "click") -> dict:
    return {"event_id": eid, "ts": ts, "user_id": user, "item_id": item, "event_type": kind}


def test_attribution_counts_only_clicks_on_items_shown_before_within_the_window(tmp_path):
    _write(tmp_path / "exposures.jsonl", [_exposure("x1", 100.0, "u1", "A", ["i1", "i2"]),
                                          _exposure("x2", 200.0, "u1", "A", ["i3"]),
                                          _exposure("x3", 100.0, "u2", "B", ["i1"])])
    _write(tmp_path / "events.jsonl", [
        _event("e1", 150.0, "u1", "i1"),                   # attributed
        _event("e1", 150.0, "u1", "i1"),                   # same id logged twice: counted once
        _event("e2", 160.0, "u1", "i9"),                   # never shown
        _event("e3", 100.0 + 2 * 86_400, "u1", "i2"),      # shown, but outside the 24 h window
        _event("e4", 50.0, "u1", "i1"),                    # before the first exposure: pre-period
        _event("e5", 170.0, "u1", "i1", "view"),           # other event types are ignored
        _event("e6", 300.0, "u1", "i7", "conversion"),     # any conversion after exposure counts
        _event("e7", 90.0, "u2", "i1", "conversion"),      # pre-period conversion
    ])
    logs = read_experiment(tmp_path)
    logs = type(logs)(logs.log_dir, logs.exposures, logs.events.unique("event_id"), logs.spec)
    users = {r["user_id"]: r for r in user_table(logs, attributed_clicks(logs.exposures, logs.events, 86_400)).to_dicts()}
    assert (users["u1"]["exposures"], users["u1"]["clicks"], users["u1"]["converted"]) == (2, 1, 1)
    assert (users["u1"]["pre_clicks"], users["u1"]["pre_conversions"]) == (1, 0)
    assert (users["u2"]["clicks"], users["u2"]["converted"], users["u2"]["pre_conversions"]) == (0, 0, 1)


@pytest.fixture(scope="module")
def lift_logs(tmp_path_factory) -> tuple[Path, SimulationConfig]:
    cfg = SimulationConfig(n_users=12_000, ctr_lift={"B": 0.25})
    return write_logs(tmp_path_factory.mktemp("lift"), cfg, seed=11), cfg


def test_planted_lift_is_detected_from_logs_and_ci_covers_it(lift_logs):
    log_dir, cfg = lift_logs
    report = analyse_online(log_dir)
    truth = true_metrics(cfg)
    ctr = next(c for c in report.comparisons if c.metric == "ctr")
    planted = truth["B"]["ctr"] - truth["A"]["ctr"]
    assert ctr.p_value < 0.05 and ctr.verdict(report.alpha) == "better"
    assert ctr.ci_low <= planted <= ctr.ci_high
    assert ctr.rel_ci_low <= 0.25 <= ctr.rel_ci_high
    assert ctr.cuped is not None and ctr.cuped.variance_reduction > 0
    assert ctr.cuped.ci_low <= planted <= ctr.cuped.ci_high
    conv = next(c for c in report.comparisons if c.metric == "conversion_rate")
    assert conv.ci_low <= truth["B"]["conversion_rate"] - truth["A"]["conversion_rate"] <= conv.ci_high
    assert not report.srm["mismatch"]
    assert not [w for w in report.warnings if w.code in ("SRM", "CROSSOVER", "UNDECLARED_VARIANT")]
    assert report.timeline and report.timeline[-1].users == sum(v.users for v in report.variants)
    assert report.timeline[-1].rel_lift == pytest.approx(ctr.rel_lift)
    json.loads(report.to_json())  # strict JSON (no NaN)


def test_planted_sample_ratio_mismatch_is_flagged_as_an_error(tmp_path):
    cfg = SimulationConfig(n_users=6_000, ctr_lift={}, lost_treatment_share=0.12)
    report = analyse_online(write_logs(tmp_path, cfg, seed=12))
    srm = [w for w in report.warnings if w.code == "SRM"]
    assert report.srm["mismatch"] and report.srm["p_value"] < 0.001
    assert srm and srm[0].severity == "error" and "SAMPLE RATIO MISMATCH" in srm[0].message


def test_small_experiment_warns_underpowered_with_the_mde(tmp_path):
    report = analyse_online(write_logs(tmp_path, SimulationConfig(n_users=1_500, ctr_lift={}), seed=13))
    warning = next(w for w in report.warnings if w.code == "UNDERPOWERED" and "ctr" in w.message)
    ctr = next(c for c in report.comparisons if c.metric == "ctr")
    assert ctr.mde_rel > 0.05 and f"±{ctr.mde_rel:.1%}" in warning.message


def test_declared_weights_drive_the_srm_check_and_crossover_users_are_excluded(tmp_path):
    exposures = [_exposure(f"x{i}", 10.0 + i, f"u{i}", "A" if i % 5 else "B", ["i1"]) for i in range(500)]
    exposures.append(_exposure("x-cross", 9.0, "u1", "B", ["i1"]))  # u1 also saw A
    _write(tmp_path / "exposures.jsonl", exposures)
    _write(tmp_path / "events.jsonl", [_event(f"e{i}", 20.0 + i, f"u{i}", "i1") for i in range(0, 500, 3)])
    (tmp_path / "experiment.json").write_text(json.dumps({"name": "t", "variants": {"A": 80, "B": 20}, "start_ts": 0}))
    report = analyse_online(tmp_path)
    assert not report.srm["mismatch"]
    assert any(w.code == "CROSSOVER" and w.message.startswith("1 users") for w in report.warnings)
    assert sum(v.users for v in report.variants) == 499


@pytest.mark.parametrize("line, expected", [
    ('{"exposure_id": "x2", "ts": 2, oops}', "line 2: invalid JSON"),
    ('{"exposure_id": "x2", "ts": 2, "variant": "A", "items": ["i1"]}', "line 2: missing required field(s) user_id"),
    ('{"exposure_id": "x2", "ts": "yesterday", "user_id": "u", "variant": "A", "items": ["i1"]}', "line 2: 'ts' must be"),
    ('[1, 2]', "line 2: expected a JSON object"),
])
def test_malformed_log_line_is_named_by_file_and_line(tmp_path, line, expected):
    _write(tmp_path / "exposures.jsonl", [_exposure("x1", 1.0, "u1", "A", ["i1"]), line])
    _write(tmp_path / "events.jsonl", [_event("e1", 2.0, "u1", "i1")])
    with pytest.raises(ReportInputError) as err:
        read_experiment(tmp_path)
    assert "exposures.jsonl" in str(err.value) and expected in str(err.value)


def test_empty_or_missing_logs_are_clear_errors(tmp_path):
    with pytest.raises(ReportInputError, match="not found"):
        read_experiment(tmp_path / "nope")
    _write(tmp_path / "exposures.jsonl", [_exposure("x1", 1.0, "u1", "A", ["i1"])])
    with pytest.raises(ReportInputError, match="events.jsonl: file not found"):
        read_experiment(tmp_path)
    (tmp_path / "events.jsonl").write_text("\n")
    with pytest.raises(ReportInputError, match="events.jsonl: no records"):
        read_experiment(tmp_path)
    _write(tmp_path / "events.jsonl", [_event("e1", 2.0, "u1", "i1")])
    (tmp_path / "experiment.json").write_text('{"variants": {"A": 1, "B": -1}}')
    with pytest.raises(ReportInputError, match="positive"):
        read_experiment(tmp_path)


def test_a_declared_variant_that_logged_nothing_is_an_srm_and_one_served_variant_is_an_error(tmp_path):
    _write(tmp_path / "exposures.jsonl", [_exposure(f"x{i}", 10.0 + i, f"u{i}", "A", ["i1"]) for i in range(50)])
    _write(tmp_path / "events.jsonl", [_event(f"e{i}", 20.0 + i, f"u{i}", "i1") for i in range(0, 50, 4)])
    with pytest.raises(ReportInputError, match="only variant 'A'"):
        analyse_online(tmp_path)
    (tmp_path / "experiment.json").write_text(json.dumps({"name": "t", "variants": {"A": 1, "B": 1}}))
    report = analyse_online(tmp_path)
    assert [w.code for w in report.warnings][:2] == ["SRM", "EMPTY_VARIANT"] and not report.comparisons


def test_a_half_written_last_line_is_not_yet_a_record(tmp_path, caplog):
    """A report read while the server appends may catch its last batch half written: that fragment
    is left out (the next read has it whole) instead of failing the report as a malformed log."""
    _write(tmp_path / "events.jsonl", [_event("e1", 2.0, "u1", "i1")])
    whole = json.dumps(_exposure("x1", 1.0, "u1", "A", ["i1"])) + "\n"
    (tmp_path / "exposures.jsonl").write_text(whole + json.dumps(_exposure("x2", 1.5, "u2", "B", ["i1"]))[:40])
    with caplog.at_level("WARNING"):
        logs = read_experiment(tmp_path)
    assert logs.exposures["exposure_id"].to_list() == ["x1"]
    assert "after the last newline" in caplog.text
