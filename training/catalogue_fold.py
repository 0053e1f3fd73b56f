"""The next training run includes the live catalogue: the log of items added and taken down while
serving (`feature_store.catalogue_log`) folded into the dataset a run trains on.

- Items put and not taken down join the catalogue as items without interactions (cold items with
  content). Their content is made the way the embed step makes a dataset item's: per medium the
  encoder recorded in the dataset's item-vector artefact. An encoder output the server logged
  with that same encoder version is taken as is; otherwise the raw media file kept in the log is
  encoded through `training.embed_job.embed_medium` (its cache included). For media a dataset
  ships as precomputed vectors (TikTok) the put's vectors of that width are used.
- Dataset items taken down stay in the tables: their interactions happened, stay in users'
  histories (as the online store serves them) and in training; they are no longer candidates:
  the run marks them (`taken_down` in items.parquet), evaluation scores them -inf (a held-out
  interaction with one counts as a miss: the feed cannot show it any more) and serving never
  returns them.
- The run records the folded prefix of the log (`catalogue_log` in run.json), so a server of the
  run replays only the operations that came after it, and `recsys evaluate` folds the same prefix.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from feature_store.catalogue_log import CatalogueFold, CatalogueLog, fold_into_dataset, open_log
from recsys.data import Dataset
from training.content import ItemContent

log = logging.getLogger(__name__)


@dataclass
class FoldReport:
    """Counts of how the folded items got their content, and items left without any (not candidates)."""

    reused: dict[str, int] = field(default_factory=dict)
    encoded: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (item_id, medium, reason)
    unusable: list[str] = field(default_factory=list)


def fold_log(ds: Dataset, store_dir: Path, upto: int | None = None) -> tuple[Dataset, CatalogueFold | None]:
    """`ds` with its live-catalogue log folded in (None when the dataset has no log)."""
    catalogue = open_log(store_dir, ds.name)
    if catalogue is None or not len(catalogue):
        return ds, None
    return fold_into_dataset(ds, catalogue, upto)


def fold_recorded(ds: Dataset, recorded: dict[str, Any] | None) -> Dataset:
    """The dataset as a run recorded training on it: the same prefix of the same log (evaluation)."""
    if not isinstance(recorded, dict) or not recorded.get("ops"):
        return ds
    path = Path(str(recorded.get("log", "")))
    if not path.is_file():
        log.warning("the run was trained with %s operations of %s, which is gone: evaluating on the dataset alone "
                    "(the items added live are not ranked)", recorded["ops"], path)
        return ds
    catalogue = CatalogueLog(path.parent)
    n = int(recorded["ops"])
    if n > len(catalogue) or catalogue.prefix_digest(n) != recorded.get("digest"):
        log.warning("%s no longer starts with the %d operations the run was trained with: evaluating on the "
                    "dataset alone", path, n)
        return ds
    return fold_into_dataset(ds, catalogue, n)[0]


def _encoder_for(medium: str, described: Any):  # noqa: ANN202 - a ContentEncoder
    from recsys.encoders import build_encoder
    from recsys.encoders.specs import spec_from_dict

    spec = described.get("spec") if isinstance(described, dict) else None
    if not spec:
        raise ValueError(f"the dataset's {medium} vectors record no encoder spec, so items added live cannot be "
                         f"embedded like them: run `recsys embed` again")
    return build_encoder(medium, spec_from_dict(medium, spec))


def fold_content(content: ItemContent, folded: Dataset, fold: CatalogueFold, store_dir: Path,
                 batch_size: int = 32) -> tuple[ItemContent, FoldReport]:
    """`content` of the dataset's own items grown to the folded catalogue (see module docstring)."""
    from feature_store.embedding_cache import EmbeddingCache
    from training.embed_job import embed_medium

    report = FoldReport()
    n, n_base = folded.n_items, fold.n_base
    index_of = dict(zip(folded.items["item_id"].to_list(), folded.items["item_index"].to_list()))
    changed = fold.replaced + fold.added
    features, masks = {}, {}
    for medium, base in content.features.items():
        if medium in folded.item_features:  # precomputed: already folded with the dataset
            features[medium] = np.asarray(folded.item_features[medium], np.float32)
            masks[medium] = np.asarray(folded.feature_mask[medium], bool)
            continue
        matrix = np.zeros((n, base.shape[1]), np.float32)
        mask = np.zeros(n, bool)
        matrix[:n_base], mask[:n_base] = base, content.masks[medium]
        described = content.encoders.get(medium)
        version = described.get("version") if isinstance(described, dict) else None
        to_encode = []
        for item_id in changed:
            row = index_of[item_id]
            matrix[row], mask[row] = 0.0, False
            op = fold.ops_by_id[item_id]
            if medium not in op["media"]:
                continue
            logged = ((op.get("features") or {}).get(medium) or {}).get(version) if version else None
            if logged is not None and len(logged) == base.shape[1]:
                matrix[row], mask[row] = np.asarray(logged, np.float32), True
                report.reused[medium] = report.reused.get(medium, 0) + 1
            elif (op.get("files") or {}).get(medium):
                to_encode.append(item_id)
            else:
                report.failures.append((item_id, medium, f"no {version} vector and no file in the log"))
        if to_encode:
            encoder = _encoder_for(medium, described)
            if encoder.dim != base.shape[1]:
                raise ValueError(f"the {medium} encoder {encoder.version} outputs {encoder.dim} values, the dataset's "
                                 f"vectors have {base.shape[1]}")
            mini = folded.items.filter(pl.col("item_id").is_in(to_encode)).sort("item_index")
            ids = mini["item_id"].to_list()
            mini = mini.with_columns(pl.Series("item_index", np.arange(len(ids), dtype=np.int32)),
                                     pl.lit(None, pl.String).alias("title"))
            part = Dataset(name=folded.name, items=mini, interactions=folded.interactions.head(0))
            cache = EmbeddingCache(store_dir / "embeddings", encoder.version, encoder.dim)
            vectors, found, medium_report, failures = embed_medium(part, medium, encoder, cache, batch_size,
                                                                   Path(fold.log).parent, progress=False)
            rows = np.asarray([index_of[i] for i in ids], np.int64)
            matrix[rows[found]], mask[rows[found]] = vectors[found], True
            report.encoded[medium] = int(found.sum())
            report.failures += [(f.item_id, medium, f.reason) for f in failures]
        features[medium], masks[medium] = matrix, mask
    for item_id in changed:
        row = index_of[item_id]
        if not any(masks[m][row] for m in masks):
            report.unusable.append(item_id)
    return ItemContent(features, masks, content.encoders), report


def describe_fold(fold: CatalogueFold, report: FoldReport, media: list[str]) -> str:
    """The one line `recsys train` prints about the live catalogue it folded in."""
    made = ", ".join(f"{m}: {report.reused.get(m, 0)} from the log's vectors, {report.encoded.get(m, 0)} encoded from "
                     f"its files" for m in media if report.reused.get(m) or report.encoded.get(m))
    text = (f"catalogue log {fold.log} ({fold.ops} operations): {len(fold.added)} live items folded in, "
            f"{len(fold.replaced)} dataset items with new content, {len(fold.removed)} taken down (kept in histories "
            f"and training, no longer candidates; held-out interactions with them count as misses)")
    if made:
        text += f"; {made}"
    if report.unusable:
        text += (f"; {len(report.unusable)} items without any usable medium are not candidates "
                 f"({', '.join(report.unusable[:5])}{'...' if len(report.unusable) > 5 else ''})")
    if report.failures:
        text += f"; {len(report.failures)} media failed (first: {' / '.join(report.failures[0])})"
    return text
