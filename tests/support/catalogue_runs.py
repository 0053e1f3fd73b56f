"""Run directories with a content path, for the live-catalogue tests and benchmarks.

They are written through the same `recsys.models.content_projection` payload a trained run
carries, but their projections are seeded random Gaussian maps (scaled 1/sqrt(d), so inner
products of encoder outputs are approximately kept: Johnson-Lindenstrauss) and their fusion is
the weighted sum with equal weights. Nothing here is trained and the names say so: they prove
the serving mechanics (embed a new item from raw media with the run's encoders, index it, take
it down), with real encoders and real data underneath. A trained run (`recsys train`) writes the
same files with learned weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.artifact import l2_normalise, save_run
from recsys.models.content_projection import PROJECTION_FILE, load_content_path, projection_payload
from recsys.models.fusion import MediumProjection, WeightedSumFusion
from support.sample_runs import MEAN_POOL, _popularity, _users_and_vectors


def _random_path(in_dims: dict[str, int], dim: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    projections = {}
    for medium, width in in_dims.items():
        proj = MediumProjection(width, dim, 0)
        with torch.no_grad():
            proj.net.weight.copy_(torch.randn(dim, width, generator=generator) / np.sqrt(width))
            proj.net.bias.zero_()
        projections[medium] = proj
    fusion = WeightedSumFusion(len(in_dims), dim)
    return projection_payload(projections, 0, dim, 0, fusion=fusion, fusion_kind="weighted", media_order=list(in_dims))


def _embed_catalogue(run_dir: Path, features: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> np.ndarray:
    return load_content_path(run_dir).embed_items(features, masks)


def movielens_content_run(out: Path, text_encoder, image_encoder, audio_encoder, dim: int = 256, seed: int = 0,
                          model_version: str = "ml100k-content-untrained-1") -> Path:
    """ML-100K (text items: MiniLM on title + genres) whose content path also takes images and audio."""
    from recsys.data.registry import load_dataset
    from recsys.encoders import spec_to_dict

    ds = load_dataset("ml-100k")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoders = {"text": text_encoder, "image": image_encoder, "audio": audio_encoder}
    torch.save(_random_path({m: e.dim for m, e in encoders.items()}, dim, seed), out / PROJECTION_FILE)
    text = text_encoder.encode([t or "" for t in ds.items["text"].to_list()])
    item_vectors = l2_normalise(_embed_catalogue(out, {"text": text}, {"text": np.ones(len(text), bool)}))
    users, user_vectors = _users_and_vectors(ds.interactions, item_vectors)
    items = ds.items.select("item_id", "item_index", "media", "title").with_columns(
        pl.Series("popularity", _popularity(ds.interactions, ds.n_items)))
    meta = {m: {"version": e.version, "dim": e.dim, "spec": spec_to_dict(e.spec)} for m, e in encoders.items()}
    return save_run(out, model_version=model_version, dataset=ds.name, data_version=ds.version,
                    config={"model": {"kind": "mean_pool", "note": "fixture: random content path, untrained"}},
                    items=items, users=users, item_vectors=item_vectors, user_vectors=user_vectors,
                    user_encoder_payload=MEAN_POOL, extra_meta={"encoders": meta})


def tiktok_content_run(out: Path, dim: int = 64, seed: int = 0, model_version: str = "tiktok-content-untrained-1") -> Path:
    """TikTok's real 128-d image + audio features through a random content path (precomputed media)."""
    from recsys.data.registry import load_dataset

    ds = load_dataset("tiktok")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    features = {m: np.asarray(ds.item_features[m], np.float32) for m in ("image", "audio")}
    torch.save(_random_path({m: f.shape[1] for m, f in features.items()}, dim, seed), out / PROJECTION_FILE)
    masks = {m: np.asarray(ds.feature_mask[m], bool) for m in features}
    item_vectors = l2_normalise(_embed_catalogue(out, features, masks))
    train = ds.split("train")
    users, user_vectors = _users_and_vectors(train, item_vectors)
    items = ds.items.select("item_id", "item_index", "media", "title").with_columns(
        pl.Series("popularity", _popularity(train, ds.n_items)))
    encoders = {m: {"kind": "precomputed", "source": f"tiktok/{m}_feat.npy", "shape": list(f.shape)}
                for m, f in features.items()}
    return save_run(out, model_version=model_version, dataset=ds.name, data_version=ds.version,
                    config={"model": {"kind": "mean_pool", "note": "fixture: random content path, untrained"}},
                    items=items, users=users, item_vectors=item_vectors, user_vectors=user_vectors,
                    user_encoder_payload=MEAN_POOL, extra_meta={"encoders": encoders})
