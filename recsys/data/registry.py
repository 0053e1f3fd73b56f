"""Find and load a dataset by registered name (under `RECSYS_DATA_DIR`) or by folder path."""
from __future__ import annotations

from pathlib import Path

from recsys.config import get_settings
from recsys.data.errors import DataValidationError, DataProblem
from recsys.data.movielens import is_grouplens_layout, is_recbole_layout, load_grouplens, load_recbole
from recsys.data.schema import Dataset
from recsys.data.tabular import is_tabular_layout, load_tabular
from recsys.data.tiktok import is_tiktok_layout, load_tiktok

REGISTERED = ("ml-100k", "tiktok")


def dataset_path(name: str) -> Path:
    return get_settings().data_dir / name


def load_path(path: Path, name: str | None = None) -> Dataset:
    """Detect the layout of a folder and load it (every problem reported in one error)."""
    path = Path(path)
    if not path.is_dir():
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
        raise DataValidationError([DataProblem(str(path), None, None,
                                               f"dataset '{text}' not found (RECSYS_DATA_DIR={get_settings().data_dir})")])
    key = (str(path.resolve()), max(f.stat().st_mtime for f in path.iterdir()))
    if key not in _CACHE:
        _CACHE[key] = load_path(path, name=path.name)
    return _CACHE[key]
