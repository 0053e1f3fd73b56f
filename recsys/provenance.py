"""Where a run came from, recorded in its `run.json` (what an MLflow run records, without a server).

Why: a figure in BENCHMARKS.md or an A/B report is only trusted when one can say which code,
which packages, which command and which machine produced the model. Every field is best effort:
a run trained outside a git checkout records `git_commit: null`, never fails.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# The packages whose versions change a model's numbers (or its ability to load).
TRACKED_PACKAGES = ("torch", "torchrec", "fbgemm-gpu-cpu", "numpy", "polars", "faiss-cpu", "sentence-transformers",
                    "efficientnet-lite-pytorch", "aisfx", "librosa", "open_clip_torch", "recsys")
REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """HEAD of the checkout the code runs from, with `+dirty` when files differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict[str, Any]:
    import psutil

    return {"hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}


def run_provenance() -> dict[str, Any]:
    """The `run.json` keys: git_commit, packages, command, machine."""
    return {"git_commit": git_commit(), "packages": package_versions(), "command": " ".join(sys.argv),
            "machine": machine()}
