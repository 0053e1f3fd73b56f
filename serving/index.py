"""Nearest-neighbour search over item vectors (inner product), with media filters and exclusions.

Why a class of our own around FAISS: a feed must return exactly k items even when the media
filter or the user's seen items remove most of the raw top hits. Filters are pushed into FAISS
as an `IDSelectorBitmap` (so an approximate index only ever collects allowed ids); exclusions are
over-fetched; when an approximate index still comes back short, the fetch grows, and as a last
resort the query is answered exactly over the filtered subset. Which index `auto` builds (exact
for small catalogues of narrow vectors, HNSW for wide ones, IVF above 50k items) and why is in
`IndexConfig`; the figures are in BENCHMARKS.md, "## Feed API: load, latency and the
nearest-neighbour index".
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # six INFO lines about CPU builds on every start
import faiss  # noqa: E402
import numpy as np

log = logging.getLogger(__name__)

_EXPANSIONS = 2  # over-fetch rounds (x4 each) before falling back to exact search


@dataclass(frozen=True)
class IndexConfig:
    """How to build the index.

    `kind='auto'`: exact search while one query's scan is cheap (n_items x dim <= `exact_max_scan`
    multiply-adds, ~0.3 ms on one core); HNSW for other catalogues up to `exact_max_items` (wide
    vectors: the TikTok ensemble's 6,710 x 771 scan took 0.9 ms, HNSW 0.26 ms at recall@20 0.994);
    IVF above that (HNSW's recall plateaued near 0.8 at 1M clustered items, IVF's stayed >= 0.999).
    """

    kind: str = "auto"
    exact_max_items: int = 50_000
    exact_max_scan: int = 2_000_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 96
    ivf_nlist: int | None = None
    ivf_nprobe: int = 32
    build_threads: int = 2

    def resolve(self, n_items: int, dim: int) -> str:
        if self.kind != "auto":
            return self.kind
        if n_items > self.exact_max_items:
            return "ivf"
        return "flat" if n_items * dim <= self.exact_max_scan else "hnsw"


class ItemIndex:
    """Top-k items by inner product with a query, optionally restricted to a mask of allowed items.

    Args:
        vectors: (n_items, d) float32, row = item_index (L2-normalised: inner product = cosine).
        config: index kind and its parameters.

    Example::

        index = ItemIndex(run.item_vectors, IndexConfig()); ids, scores = index.search(q, 20)
    """

    def __init__(self, vectors: np.ndarray, config: IndexConfig = IndexConfig(), *, store: Path | None = None,
                 mmap: bool = True):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # no copy of a float32 memory map
        assert self.vectors.ndim == 2, f"expected a (n_items, d) matrix, got shape {self.vectors.shape}"
        self.n_items, self.dim = self.vectors.shape
        self.config = config
        self.kind = config.resolve(self.n_items, self.dim)
        self.shared_file: Path | None = None
        # Map the stored index (shared by N worker processes) or read it into this process: a mapped
        # IVF scanned 5x slower per query (2.2 vs 0.43 ms at 1M x 64, nprobe 32), so one process reads it.
        self.mmap = mmap
        started = time.perf_counter()
        if self.kind == "flat":
            # Exact search scans `vectors` itself (BLAS, see `_exact_masked`): no FAISS copy, so
            # worker processes that memory-map the run's item_vectors.npy share one copy.
            self.index = None
        elif store is not None:
            self.index = self._shared(Path(store))
        else:
            self.index = self._build_threads()
        self.build_seconds = time.perf_counter() - started
        log.info("%s %s index over %d items (d=%d) in %.2fs", ("mapped" if self.mmap else "read") if self.shared_file else "built", self.kind,
                 self.n_items, self.dim, self.build_seconds)

    def _build_threads(self) -> faiss.Index:
        previous_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(max(1, self.config.build_threads))
        try:
            return self._build()
        finally:
            faiss.omp_set_num_threads(previous_threads)

    def _shared(self, store: Path) -> faiss.Index:
        """The index built once into `store` and memory-mapped (``IO_FLAG_MMAP``): the server
        processes of one machine share its vectors / inverted lists through the page cache instead of
        holding one copy each (HNSW's graph stays per process). The first process builds it under a
        file lock; the file name carries the index parameters and a sample of the vectors."""
        import fcntl  # noqa: PLC0415

        fingerprint = hashlib.sha256(repr((self.kind, self.config, self.vectors.shape)).encode())
        fingerprint.update(np.ascontiguousarray(self.vectors[:: max(1, self.n_items // 4096)]).tobytes())
        path = store / f"{self.kind}-{self.n_items}x{self.dim}-{fingerprint.hexdigest()[:16]}.faiss"
        try:
            store.mkdir(parents=True, exist_ok=True)
            with open(store / ".build.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not path.exists():
                    tmp = path.with_suffix(f".tmp{os.getpid()}")
                    faiss.write_index(self._build_threads(), str(tmp))
                    tmp.replace(path)
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY) if self.mmap \
                else faiss.read_index(str(path))
        except (OSError, RuntimeError) as err:  # a read-only or full disk: one private copy still serves
            log.warning("index file %s unusable (%s); building a private %s index", path, err, self.kind)
            return self._build_threads()
        self.shared_file = path
        return index

    def _build(self) -> faiss.Index:
        d = self.dim
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.config.hnsw_ef_construction
        elif self.kind == "ivf":
            nlist = self.config.ivf_nlist or max(1, int(4 * math.sqrt(self.n_items)))
            nlist = min(nlist, max(1, self.n_items // 39))  # k-means wants >= 39 points per list
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            sample = self.vectors if self.n_items <= nlist * 64 else self.vectors[rng.choice(self.n_items, nlist * 64, replace=False)]
            index.train(sample)
        else:
            raise ValueError(f"unknown index kind {self.kind!r} (expected flat, hnsw or ivf)")
        index.add(self.vectors)
        return index

    @property
    def memory_bytes(self) -> int:
        """Bytes of the serialised index (vectors + graph or lists): what it costs in RAM (flat: the vectors)."""
        if self.index is None:
            return int(self.vectors.nbytes)
        if self.shared_file is not None:
            return self.shared_file.stat().st_size
        return int(faiss.serialize_index(self.index).nbytes)

    def _params(self, fetch: int, selector: faiss.IDSelector | None) -> faiss.SearchParameters | None:
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.config.hnsw_ef_search, fetch))
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.config.ivf_nprobe)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def search_batch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Unfiltered top-k for many queries: (ids (b, k), scores (b, k)); ids are -1 past the end."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.index is None:
            return self.exact_batch(queries, k)
        scores, ids = self.index.search(queries, k, params=self._params(k, None))
        return ids, scores

    def exact_batch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth for recall: brute force over all vectors, whatever the index kind."""
        scores, ids = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), self.vectors, k, faiss.METRIC_INNER_PRODUCT)
        return ids, scores

    def search(self, query: np.ndarray, k: int, allowed: "AllowedItems | None" = None,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k allowed, non-excluded items for one query: (item indexes, scores), best first.

        Returns fewer than k only when fewer than k items pass the filter and the exclusions.
        """
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        exclude = np.unique(np.asarray(exclude, dtype=np.int64)) if exclude is not None and len(exclude) else None
        n_allowed = allowed.count if allowed is not None else self.n_items
        if exclude is not None:
            n_allowed -= int(allowed.mask[exclude].sum()) if allowed is not None else len(exclude)
        want = min(k, max(n_allowed, 0))
        if want == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if self.kind == "flat":
            return self._exact_masked(query[0], want, allowed, exclude)
        selector = allowed.selector if allowed is not None else None
        fetch = k + (len(exclude) if exclude is not None else 0)
        for _ in range(_EXPANSIONS + 1):
            fetch = min(fetch, self.n_items)
            scores, ids = self.index.search(query, fetch, params=self._params(fetch, selector))
            ids, scores = ids[0], scores[0]
            keep = ids >= 0
            if exclude is not None:  # sorted by np.unique above: a binary search (np.isin sorts again)
                at = np.minimum(np.searchsorted(exclude, ids), len(exclude) - 1)
                keep &= exclude[at] != ids
            if int(keep.sum()) >= want:
                return ids[keep][:k].astype(np.int64), scores[keep][:k]
            fetch *= 4
        return self._exact_masked(query[0], want, allowed, exclude)  # the approximate index ran short

    def _exact_masked(self, query: np.ndarray, want: int, allowed: "AllowedItems | None",
                      exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-`want` over the whole matrix with filtered items scored -inf: the flat index's
        search, and the last resort when an approximate index comes back short.

        One BLAS matrix-vector product: at 6,710 x 771 (the TikTok ensemble) it takes half the
        time of `IndexFlatIP.search` for a single query, and masking needs no selector or over-fetch.
        """
        scores = self.vectors @ query
        if allowed is not None:
            scores[~allowed.mask] = -np.inf
        if exclude is not None:
            scores[exclude] = -np.inf
        top = np.argpartition(-scores, want - 1)[:want] if want < len(scores) else np.arange(len(scores))
        order = top[np.argsort(-scores[top], kind="stable")]
        return order.astype(np.int64), scores[order].astype(np.float32)


class AllowedItems:
    """A reusable filter: which items may be returned (e.g. those carrying one of some media).

    Holds the boolean mask, its count and a FAISS bitmap selector built once, so each
    request reuses it instead of rebuilding a selector over the whole catalogue.
    """

    def __init__(self, mask: np.ndarray):
        self.mask = np.asarray(mask, dtype=bool)
        self.count = int(self.mask.sum())
        self._bitmap = np.packbits(self.mask, bitorder="little")  # kept alive: FAISS holds a raw pointer
        self.selector = faiss.IDSelectorBitmap(self.mask.size, faiss.swig_ptr(self._bitmap))
