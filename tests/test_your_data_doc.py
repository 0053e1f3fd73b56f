"""docs/your-data.md cannot rot: every command of its walkthrough runs here, in the page's order.

The page's ```bash blocks are the script. Each `recsys ...` line runs as a real subprocess (the
CLI a newcomer types), `recsys serve ... &` starts a real uvicorn server (waited on /readyz), and
each `curl` line is sent to it. The checks are what the page promises each step prints.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.local_server import free_port, redis_url_of, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "your-data.md"


def walkthrough_lines(page: str) -> list[str]:
    """The commands of the page's ```bash blocks (comments stripped, continuations joined)."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", page, flags=re.S):
        joined = block.replace("\\\n", " ")
        for raw in joined.splitlines():
            line = raw.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_page_lists_the_whole_path():
    lines = walkthrough_lines(PAGE.read_text())
    verbs = [shlex.split(line)[1] for line in lines if line.startswith("recsys ")]
    assert verbs[:6] == ["init", "data", "embed", "train", "features", "evaluate"], verbs
    assert any(line.startswith("recsys serve") and line.endswith("&") for line in lines)
    assert sum(line.startswith("curl ") for line in lines) >= 3


@pytest.mark.slow
def test_walkthrough_runs_as_written(tmp_path, redis_server):
    port = free_port()
    env = {**os.environ, "RECSYS_STORE_DIR": str(tmp_path / "store"), "REDIS_URL": redis_url_of(redis_server),
           "RECSYS_REDIS_NAMESPACE": "your-data-doc", "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    outputs: dict[str, str] = {}
    server: subprocess.Popen | None = None
    try:
        for line in walkthrough_lines(PAGE.read_text()):
            line = line.replace("8000", str(port))
            if line.startswith("recsys serve"):
                argv = shlex.split(line.rstrip("& ").strip())
                server = subprocess.Popen([sys.executable, "-m", "commands.main", *argv[1:]], cwd=tmp_path, env=env,
                                          stdout=open(tmp_path / "serve.log", "wb"), stderr=subprocess.STDOUT)
                wait_until_ready(server, f"http://127.0.0.1:{port}", 180.0, str(tmp_path / "serve.log"), interval_s=0.2)
                continue
            if line.startswith("curl "):
                done = subprocess.run(shlex.split(line), cwd=tmp_path, capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, (line, done.stderr)
                outputs[line] = done.stdout
                continue
            assert line.startswith("recsys "), f"the walkthrough may only hold recsys and curl lines: {line}"
            argv = shlex.split(line)
            done = subprocess.run([sys.executable, "-m", "commands.main", *argv[1:]], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=1200)
            assert done.returncode == 0, (line, done.stdout[-3000:], done.stderr[-3000:])
            assert "Traceback" not in done.stderr, line
            outputs[line] = done.stdout + done.stderr
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)

    by_verb = {shlex.split(k)[1] if k.startswith("recsys") else k: v for k, v in outputs.items()}
    assert "wrote the example catalogue" in by_verb["init"]
    assert "OK" in by_verb["data"] and "30 items" in by_verb["data"]
    assert "image" in by_verb["embed"] and "audio" in by_verb["embed"] and "text" in by_verb["embed"]
    report = json.loads(by_verb["evaluate"].strip().splitlines()[-1])
    assert report["n_users"] > 0 and 0.0 <= report["recall@10"] <= 1.0
    curls = [v for k, v in outputs.items() if k.startswith("curl ")]
    feed = json.loads(curls[0])
    assert len(feed["items"]) == 5 and feed["model_version"]
    search = json.loads(curls[1])
    assert search["items"], "the text search of the page found nothing"
    similar = json.loads(curls[2])
    assert similar["items"]

