"""Baselines by name, so the CLI and the benchmark build them the same way.

`BASELINES` is the plugin hook: any module may add `name -> factory` (e.g. the model package
registers its content-only two-tower), and `recsys evaluate --baseline NAME` picks it up.
A factory takes the dataset name (to apply settings tuned for it) plus keyword overrides.

`TUNED` holds the settings chosen on the `valid` split of each dataset (see BENCHMARKS.md,
"## Baselines"); datasets not listed get the classes' defaults.
"""
from __future__ import annotations

from typing import Any, Callable

from recsys.baselines.base import Baseline

BaselineFactory = Callable[..., Baseline]

TUNED: dict[str, dict[str, dict[str, Any]]] = {
    # best valid NDCG@20 over k in {20,50,100,200,500} x shrink in {0,10,50,200} (+ k in {5,10,20} x
    # shrink in {0,200,1000} on TikTok, where popularity dominates and small k + heavy shrink win)
    "itemknn": {"tiktok": {"k": 10, "shrink": 1000.0}, "ml-100k": {"k": 200, "shrink": 0.0}},
    # lr in {1e-3, 2e-3, 5e-3} x reg in {1e-5, 1e-4, 1e-3}, dim 64, batch 2048; epoch = best valid NDCG@20
    # (now chosen on valid at fit time; `epochs` is the cap)
    "bpr-mf": {"tiktok": {"lr": 1e-3, "reg": 1e-4, "epochs": 100}, "ml-100k": {"lr": 1e-3, "reg": 1e-4, "epochs": 110}},
    # sasrec: the paper's settings on every dataset (not tuned; epoch chosen on valid at fit time)
}


def _most_popular(dataset: str | None = None, **overrides: Any) -> Baseline:
    from recsys.baselines.most_popular import MostPopular

    return MostPopular()


def _itemknn(dataset: str | None = None, **overrides: Any) -> Baseline:
    from recsys.baselines.itemknn import ItemKNN

    return ItemKNN(**{**TUNED["itemknn"].get(dataset or "", {}), **overrides})


def _bpr_mf(dataset: str | None = None, **overrides: Any) -> Baseline:
    from recsys.baselines.bpr import BPRMF

    return BPRMF(**{**TUNED["bpr-mf"].get(dataset or "", {}), **overrides})


def _lightgcn(dataset: str | None = None, **overrides: Any) -> Baseline:
    from recsys.baselines.bpr import LightGCN

    return LightGCN(**{**TUNED.get("lightgcn", {}).get(dataset or "", {}), **overrides})


def _lightgcn_pp(dataset: str | None = None, **overrides: Any) -> Baseline:
    from recsys.baselines.bpr import LightGCNPlusPlus

    return LightGCNPlusPlus(**{**TUNED.get("lightgcn++", {}).get(dataset or "", {}), **overrides})


def _ease(dataset: str | None = None, **overrides: Any) -> Baseline:
    from recsys.baselines.ease import EASE
    return EASE(**{**TUNED.get("ease", {}).get(dataset or "", {}), **overrides})


def _slit(dataset: str | None = None, **overrides: Any) -> Baseline:
    from recsys.baselines.slit import SLIT
    return SLIT(**{**TUNED.get("slit", {}).get(dataset or "", {}), **overrides})


def _gfcf(dataset: str | None = None, **overrides: Any) -> Baseline:
    from recsys.baselines.gfcf import GFCF
    return GFCF(**{**TUNED.get("gf-cf", {}).get(dataset or "", {}), **overrides})


def _sasrec(dataset: str | None = None, **overrides: Any) -> Baseline:
    from recsys.baselines.sasrec import SASRec

    return SASRec(**{**TUNED.get("sasrec", {}).get(dataset or "", {}), **overrides})


BASELINES: dict[str, BaselineFactory] = {
    "most-popular": _most_popular,
    "itemknn": _itemknn,
    "bpr-mf": _bpr_mf,
    "lightgcn": _lightgcn,
    "lightgcn++": _lightgcn_pp,
    "ease": _ease,
    "gf-cf": _gfcf,
    "sasrec": _sasrec,
    "slit": _slit,
}


def register_baseline(name: str, factory: BaselineFactory) -> None:
    """Add (or replace) a named baseline; call at import time of the providing module."""
    BASELINES[name] = factory


def make_baseline(name: str, dataset: str | None = None, **overrides: Any) -> Baseline:
    """Build the baseline `name` with settings tuned for `dataset`; KeyError lists the known names."""
    if name not in BASELINES:
        _import_plugins()
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r} (known: {', '.join(sorted(BASELINES))})")
    return BASELINES[name](dataset=dataset, **overrides)


def _import_plugins() -> None:
    """Model packages register their baselines on import; import them lazily (torch is heavy)."""
    try:
        import recsys.models  # noqa: F401
    except ImportError:
        pass
