"""Imports only point down the layers, so `make test` (and CI) fails on a back-import.

    commands      the CLI: may import every package below
    training      jobs              } independent of each other
    serving       the feed API      }
    feature_store the one way in to features
    recsys        core: data, encoders, towers, metrics, the run artefact

Every import statement counts, including the ones inside functions (a lazy import is still a
dependency). Test support (`tests/`, `support`) is never imported by a package.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("recsys", "feature_store", "training", "serving", "commands")
ALLOWED: dict[str, set[str]] = {
    "recsys": {"recsys"},
    "feature_store": {"feature_store", "recsys"},
    "training": {"training", "feature_store", "recsys"},
    "serving": {"serving", "feature_store", "recsys"},
    "commands": {"commands", "training", "serving", "feature_store", "recsys"},
}
TEST_SUPPORT = ("tests", "support", "conftest")


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source` (relative imports are within a package)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def layer_violations(root: Path, packages: tuple[str, ...] = PACKAGES,
                     allowed: dict[str, set[str]] = ALLOWED) -> list[str]:
    """One line per import that points the wrong way: 'file:line: package imports module'."""
    problems = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imported_modules(path.read_text()):
                top = module.split(".")[0]
                where = f"{path.relative_to(root)}:{line}"
                if top in TEST_SUPPORT:
                    problems.append(f"{where}: {package} imports test support {module}")
                elif top in packages and top not in allowed[package]:
                    problems.append(f"{where}: {package} imports {module} (allowed: {sorted(allowed[package])})")
    return problems


def test_the_packages_import_only_down_the_layers() -> None:
    problems = layer_violations(REPO)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_a_back_import_is_caught(tmp_path: Path) -> None:
    (tmp_path / "recsys").mkdir()
    (tmp_path / "serving").mkdir()
    (tmp_path / "training").mkdir()
    (tmp_path / "recsys" / "core.py").write_text("def f():\n    from training.run import train  # lazy\n")
    (tmp_path / "serving" / "app.py").write_text("import training.data\nfrom support.sample_runs import x\n")
    (tmp_path / "training" / "job.py").write_text("from recsys.core import f\n")
    packages = ("recsys", "training", "serving")
    problems = layer_violations(tmp_path, packages, {p: ALLOWED[p] for p in packages})
    assert problems == [
        "recsys/core.py:2: recsys imports training.run (allowed: ['recsys'])",
        "serving/app.py:1: serving imports training.data (allowed: ['feature_store', 'recsys', 'serving'])",
        "serving/app.py:2: serving imports test support support.sample_runs",
    ]
