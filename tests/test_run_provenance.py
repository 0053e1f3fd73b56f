"""A run directory says where it came from: git commit, package versions, command line, machine."""
from __future__ import annotations

import json
import re

from support.sample_runs import synthetic_run

from recsys.artifact import load_run


def test_run_json_records_commit_packages_command_and_machine(tmp_path):
    run_dir = synthetic_run(tmp_path / "run", n_items=2000, dim=8, n_users=50)
    meta = json.loads((run_dir / "run.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", meta["git_commit"]), meta["git_commit"]
    assert meta["packages"]["torch"] == "2.14.1" and meta["packages"]["numpy"]
    assert meta["command"] and meta["machine"]["cpus"] >= 1 and meta["machine"]["python"].startswith("3.11")
    assert load_run(run_dir).meta["git_commit"] == meta["git_commit"]
