"""Every command's --help fits an 80-column terminal: descriptions wrap, nothing is cut off."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from commands.main import app

REPO = Path(__file__).resolve().parents[1]
COMMANDS = sorted({c.name for c in app.registered_commands if c.name} | {g.name for g in app.registered_groups if g.name})


@pytest.mark.parametrize("command", COMMANDS)
def test_help_wraps_at_80_columns(command):
    done = subprocess.run([sys.executable, "-m", "commands.main", command, "--help"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "80"}, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "…" not in done.stdout and "Usage:" in done.stdout
