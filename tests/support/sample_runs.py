"""Run directories for tests, benchmarks and demos, written with `recsys.artifact.save_run`.

Serving only needs the run-directory contract, not a trained network, so these give it real
inputs today: a mean-pool "model" over TikTok's real image + audio features, a text run over
ML-100K titles embedded with the packaged MiniLM, and a large synthetic catalogue (clustered
vectors, mixed media, Zipf popularity) for load and index figures. Real runs come from
`recsys train`; nothing here is a trained model and the names say so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recsys.artifact import MeanPoolUserEncoder, l2_normalise, save_run
from recsys.data.schema import MEDIA

MEAN_POOL = {"kind": MeanPoolUserEncoder.kind, "kwargs": {"half_life": 20.0}}


def _popularity(train: pl.DataFrame, n_items: int) -> np.ndarray:
    counts = train.group_by("item_index").len()
    pop = np.zeros(n_items, dtype=np.int64)
    pop[counts["item_index"].to_numpy()] = counts["len"].to_numpy()
    return pop


def _users_and_vectors(train: pl.DataFrame, item_vectors: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
    """users.parquet rows and their mean-pool vectors from train histories (oldest first)."""
    histories = (train.sort("timestamp").group_by("user_id", maintain_order=True)
                 .agg(pl.col("item_index")).sort("user_id"))
    users = histories.select("user_id").with_row_index("user_index").with_columns(
        pl.col("user_index").cast(pl.Int32), n_train=histories["item_index"].list.len().cast(pl.Int32))
    encoder = MeanPoolUserEncoder(item_vectors, **MEAN_POOL["kwargs"])
    vectors = encoder.encode([list(h) for h in histories["item_index"].to_list()])
    return users.select("user_id", "user_index", "n_train"), vectors


def _items_frame(ds, popularity: np.ndarray) -> pl.DataFrame:
    return ds.items.select("item_id", "item_index", "media", "title").with_columns(
        pl.Series("popularity", popularity))


def tiktok_mean_pool_run(out: Path, model_version: str = "tiktok-meanpool-1", dataset: str = "tiktok") -> Path:
    """Mean-pool run over TikTok's real features: item vector = L2(L2(image) ++ L2(audio)), 256-d."""
    from recsys.data.registry import load_dataset

    ds = load_dataset(dataset)
    parts = [l2_normalise(ds.item_features[m].astype(np.float32)) for m in MEDIA if m in ds.item_features]
    item_vectors = l2_normalise(np.concatenate(parts, axis=1))
    train = ds.split("train")
    users, user_vectors = _users_and_vectors(train, item_vectors)
    encoders = {m: {"spec": {"kind": "precomputed", "source": f"{dataset}/{m}_feat.npy"}} for m in ds.item_features}
    return save_run(Path(out), model_version=model_version, dataset=ds.name, data_version=ds.version,
                    config={"model": {"kind": "mean_pool", "note": "fixture: concatenated raw features, untrained"}},
                    items=_items_frame(ds, _popularity(train, ds.n_items)), users=users, item_vectors=item_vectors,
                    user_vectors=user_vectors, user_encoder_payload=MEAN_POOL, extra_meta={"encoders": encoders})


def movielens_text_run(out: Path, model_version: str = "ml100k-minilm-1", embed: bool = True) -> Path:
    """Mean-pool run over ML-100K whose item vectors are MiniLM embeddings of the item text (384-d).

    `embed=False` skips the encoder (about 10 s on 2 cores) and uses random unit vectors while
    still recording the MiniLM spec: enough for tests of paths that never look at the vectors.
    """
    from recsys.data.registry import load_dataset
    from recsys.encoders import TextSpec, spec_to_dict

    ds = load_dataset("ml-100k")
    spec = TextSpec()
    if embed:
        from recsys.encoders import build_encoder

        item_vectors = l2_normalise(build_encoder("text", spec).encode([t or "" for t in ds.items["text"].to_list()]))
    else:
        item_vectors = l2_normalise(np.random.default_rng(0).standard_normal((ds.n_items, 384)).astype(np.float32))
    users, user_vectors = _users_and_vectors(ds.interactions, item_vectors)
    return save_run(Path(out), model_version=model_version, dataset=ds.name, data_version=ds.version,
                    config={"model": {"kind": "mean_pool", "note": "fixture: item text vectors, untrained"}},
                    items=_items_frame(ds, _popularity(ds.interactions, ds.n_items)), users=users,
                    item_vectors=item_vectors, user_vectors=user_vectors, user_encoder_payload=MEAN_POOL,
                    extra_meta={"encoders": {"text": {"spec": spec_to_dict(spec)}},
                                "item_vectors": "minilm" if embed else "random (test fixture)"})


def synthetic_catalogue(n_items: int, dim: int, seed: int = 0, n_clusters: int = 2000,
                        spread: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors and each item's cluster: real embedding catalogues have topics."""
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.standard_normal((n_clusters, dim)).astype(np.float32))
    labels = rng.integers(0, n_clusters, n_items)
    out = np.empty((n_items, dim), dtype=np.float32)
    for start in range(0, n_items, 200_000):  # chunks keep peak memory at a few hundred MB
        stop = min(n_items, start + 200_000)
        noise = rng.standard_normal((stop - start, dim)).astype(np.float32) * (spread / np.sqrt(dim))
        out[start:stop] = centres[labels[start:stop]] + noise
    return l2_normalise(out), labels


def synthetic_vectors(n_items: int, dim: int, seed: int = 0, n_clusters: int = 2000, spread: float = 0.35) -> np.ndarray:
    return synthetic_catalogue(n_items, dim, seed, n_clusters, spread)[0]


def synthetic_histories(labels: np.ndarray, n_users: int, seed: int = 0) -> list[np.ndarray]:
    """Users with coherent taste: 5-30 items drawn from 1-3 topics each (not uniform noise, whose
    mean-pool is a near-tie over the whole catalogue and unlike any real user)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(labels.max() + 2))
    sizes = np.diff(starts)
    populated = np.flatnonzero(sizes)
    histories = []
    for _ in range(n_users):
        topics = rng.choice(populated, rng.integers(1, 4))
        picks = topics[rng.integers(0, len(topics), rng.integers(5, 31))]
        histories.append(order[starts[picks] + (rng.random(len(picks)) * sizes[picks]).astype(np.int64)])
    return histories


def synthetic_run(out: Path, n_items: int = 1_000_000, dim: int = 64, n_users: int = 10_000, seed: int = 0,
                  model_version: str | None = None) -> Path:
    """A large synthetic catalogue with mixed media (each item carries 1-3 of text/image/audio).

    Users are synthetic too: ids ``u0..``; their vectors are mean-pools of `synthetic_histories`.
    """
    rng = np.random.default_rng(seed + 1)
    item_vectors, labels = synthetic_catalogue(n_items, dim, seed)
    combos = [["text"], ["image"], ["audio"], ["image", "audio"], ["text", "image"], ["text", "audio"],
              ["text", "image", "audio"]]
    combo_of_item = rng.choice(len(combos), n_items, p=[0.2, 0.25, 0.15, 0.2, 0.08, 0.07, 0.05])
    media = pl.Series("media", combos, dtype=pl.List(pl.String))[combo_of_item]
    items = pl.DataFrame({"item_id": pl.int_range(0, n_items, eager=True).cast(pl.String).alias("item_id"),
                          "item_index": pl.int_range(0, n_items, eager=True).cast(pl.Int32)}).with_columns(
        media=media, title=pl.lit(None, dtype=pl.String),
        popularity=pl.Series(np.floor(1e5 / (1 + rng.permutation(n_items)) ** 0.8).astype(np.int64)))
    histories = synthetic_histories(labels, n_users, seed + 2)
    lengths = np.array([len(h) for h in histories])
    encoder = MeanPoolUserEncoder(item_vectors, **MEAN_POOL["kwargs"])
    user_vectors = encoder.encode([h.tolist() for h in histories])
    users = pl.DataFrame({"user_id": [f"u{i}" for i in range(n_users)],
                          "user_index": np.arange(n_users, dtype=np.int32), "n_train": lengths.astype(np.int32)})
    return save_run(Path(out), model_version=model_version or f"synthetic-{n_items}-{dim}d-{seed}", dataset="synthetic",
                    data_version=f"synthetic-{seed}", config={"model": {"kind": "mean_pool", "note": "synthetic catalogue"}},
                    items=items, users=users, item_vectors=item_vectors, user_vectors=user_vectors,
                    user_encoder_payload=MEAN_POOL, extra_meta={"synthetic_histories_seed": seed})

