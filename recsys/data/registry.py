"""Find and load a dataset by registered name (under `RECSYS_DATA_DIR`) or by folder path."""
from __future__ import annotations

from pathlib import Path

from recsys.config import get_settings
from recsys.data.errors import DataValidationError, DataProblem
from recsys.data.movielens import is_grouplens_layout, load_grouplens
from recsys.data.recbole import is_recbole_layout, load_recbole
from recsys.data.schema import Dataset
from recsys.data.tabular import is_tabular_layout, load_tabular
from recsys.data.tiktok import is_tiktok_layout, load_tiktok

REGISTERED = ("ml-100k", "tiktok")


def dataset_path(name: str) -> Path:
    return get_settings().data_dir / name


def available_datasets() -> list[str]:
    """Dataset folders under RECSYS_DATA_DIR (what a name may be), registered ones first."""
    root = get_settings().data_dir
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    return [n for n in REGISTERED if n in found] + [n for n in found if n not in REGISTERED]


def _not_found(text: str, path: Path) -> DataValidationError:
    import difflib

    known = available_datasets()
    close = difflib.get_close_matches(text, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    listing = ", ".join(known) or "none"
    return DataValidationError([DataProblem(str(path), None, None,
                                            f"dataset '{text}' not found{hint} (known under RECSYS_DATA_DIR="
                                            f"{get_settings().data_dir}: {listing}; or give a folder path)")])


def load_path(path: Path, name: str | None = None) -> Dataset:
    """Detect the layout of a folder and load it (every problem reported in one error)."""
    path = Path(path)
    if not path.is_dir():
        if not path.parent.exists() or path.parent == get_settings().data_dir:
            raise _not_found(path.name, path)
        raise DataValidationError([DataProblem(str(path), None, None, "dataset folder does not exist")])
    name = name or path.name
    if is_tiktok_layout(path):
        return load_tiktok(path, name)
    if is_grouplens_layout(path):
        return load_grouplens(path, name)
    if is_recbole_layout(path):
        return load_recbole(path, name)
    if is_tabular_layout(path):
        return load_tabular(path, name)
    raise DataValidationError([DataProblem(str(path), None, None,
                                           "unrecognised layout: expected interactions.parquet + *_feat.npy (TikTok), "
                                           "u.data/u.item (GroupLens), *.inter/*.item (RecBole) or items.* + interactions.*")])


_CACHE: dict[tuple[str, float], Dataset] = {}


def load_dataset(name_or_path: str | Path) -> Dataset:
    """Load a registered dataset name (resolved under RECSYS_DATA_DIR) or a folder path; memoised per process."""
    text = str(name_or_path)
    path = dataset_path(text) if text in REGISTERED or not Path(text).exists() else Path(text)
    if not path.exists():
        raise _not_found(text, path)
    key = (str(path.resolve()), max(f.stat().st_mtime for f in path.iterdir()))
    if key not in _CACHE:
        _CACHE[key] = load_path(path, name=path.name)
    return _CACHE[key]
