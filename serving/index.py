"""Nearest-neighbour search over item vectors (inner product), with media filters and exclusions.

Why a class of our own around FAISS: a feed must return exactly k items even when the media
filter or the user's seen items remove most of the raw top hits. Filters are pushed into FAISS
as an `IDSelectorBitmap` (so an approximate index only ever collects allowed ids); exclusions are
over-fetched; when an approximate index still comes back short, the fetch grows, and as a last
resort the query is answered exactly over the filtered subset.

Which index `auto` builds is decided in one place, `plan_index`, from the catalogue's size, the
vectors' width and the memory the index may take (`IndexPlan` records the kind, why, and its
memory estimate). After building, the search-time knob (HNSW efSearch, IVF nprobe) is calibrated:
the smallest value whose recall@20 against exact search, on a sample of the run's own user
vectors, reaches `target_recall` (`ItemIndex.describe()`, shown by `GET /admin/model` and the
start-up log). The figures behind the thresholds are in BENCHMARKS.md, "## Feed API: load,
latency and the nearest-neighbour index" and "### Catalogue scale".
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # six INFO lines about CPU builds on every start
import faiss  # noqa: E402
import numpy as np

log = logging.getLogger(__name__)
# Zero-copy mapping: the codes and inverted lists are used in place in the mapped file
# (``IO_FLAG_MMAP_IFC``). The older ``IO_FLAG_MMAP`` copies lists into mapped buffers behind an
# indirection and searched a 1M x 64 IVF 3-4x slower than an index read into memory (0.19-0.26 vs
# 0.05 ms per query); in place it is 0.06 ms, so `--workers N` no longer pays for sharing.
MMAP_FLAGS = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY

_EXPANSIONS = 2  # over-fetch rounds (x4 each) before falling back to exact search
KINDS = ("flat", "hnsw", "ivf", "ivf_sq8", "ivf_pq")
_RECALL_K = 20
# Search-time knob ladders the calibration walks up, cheapest first.
_EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
_NPROBE_LADDER = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclass(frozen=True)
class IndexConfig:
    """How to choose, build and tune the index.

    `kind='auto'` (see `plan_index`): exact search while one query's scan is cheap (n_items x dim
    <= `exact_max_scan` multiply-adds, ~0.3 ms on one core); HNSW for other catalogues up to
    `exact_max_items` (wide vectors: the TikTok ensemble's 6,710 x 771 scan took 0.9 ms, HNSW
    0.26 ms at recall@20 0.994); IVF above that (HNSW's recall plateaued near 0.8 at 1M clustered
    items, IVF's stayed >= 0.999), with its lists stored as float32 (`ivf`), 8-bit scalars
    (`ivf_sq8`, 4x smaller) or product-quantised codes re-ranked exactly (`ivf_pq`), the first that
    fits `memory_budget_bytes`. `hnsw_ef_search` / `ivf_nprobe` left at None are calibrated at build
    time to reach `target_recall` (recall@20 against exact search) on `calibration_queries` queries.
    """

    kind: str = "auto"
    exact_max_items: int = 50_000
    exact_max_scan: int = 2_000_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int | None = None
    ivf_nlist: int | None = None
    ivf_max_nlist: int = 4096
    ivf_nprobe: int | None = None
    ivf_train_iterations: int = 10
    pq_refine: int = 4
    memory_budget_bytes: int | None = None
    target_recall: float = 0.95
    calibration_queries: int = 300
    build_threads: int = 2

    def __post_init__(self) -> None:
        if self.kind != "auto" and self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r} (expected auto, {', '.join(KINDS)})")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall}")

    def resolve(self, n_items: int, dim: int, available_bytes: int | None = None) -> str:
        return plan_index(n_items, dim, self, available_bytes).kind


@dataclass(frozen=True)
class IndexPlan:
    """What `plan_index` decided for one catalogue, and why."""

    kind: str
    reason: str
    nlist: int | None
    pq_bytes: int | None
    estimated_bytes: int  # index memory beyond the (memory-mapped) vectors themselves; flat: 0
    memory_budget_bytes: int | None


def available_memory_bytes() -> int:
    """Memory the machine can still give (MemAvailable), read when an index is planned."""
    import psutil  # noqa: PLC0415

    return int(psutil.virtual_memory().available)


def ivf_nlist(n_items: int, config: IndexConfig) -> int:
    """IVF lists: 4 sqrt(n) (query cost ~ nprobe x n / nlist), at most `ivf_max_nlist` (build cost
    ~ n x nlist: 10M items x 4096 lists is ~5 TFLOP of assignment) and >= 39 training points a list."""
    nlist = config.ivf_nlist or min(config.ivf_max_nlist, max(1, int(4 * math.sqrt(n_items))))
    return max(1, min(nlist, n_items // 39))


def pq_bytes(dim: int) -> int:
    """Bytes per PQ code: about dim / 4 sub-quantisers of 8 bits, a divisor of dim."""
    return next(m for m in range(max(1, dim // 4), 0, -1) if dim % m == 0)


def estimated_index_bytes(kind: str, n_items: int, dim: int, config: IndexConfig) -> int:
    """The index's own memory (the item vectors are a memory map beside it, shared and evictable)."""
    ids = 8 * n_items
    if kind == "flat":
        return 0
    if kind == "hnsw":
        return n_items * (4 * dim + 2 * config.hnsw_m * 4) + ids
    coarse = 4 * dim * ivf_nlist(n_items, config)
    per_item = {"ivf": 4 * dim, "ivf_sq8": dim, "ivf_pq": pq_bytes(dim)}[kind]
    return n_items * per_item + ids + coarse


def plan_index(n_items: int, dim: int, config: IndexConfig = IndexConfig(),
               available_bytes: int | None = None) -> IndexPlan:
    """The one place the index kind is chosen.

    1. `kind` set explicitly: that kind.
    2. n_items x dim <= `exact_max_scan`: exact (one BLAS product per query, recall 1).
    3. n_items <= `exact_max_items`: HNSW (small catalogue, wide vectors).
    4. Otherwise IVF, the first of float32 lists / 8-bit scalar lists / PQ codes whose estimated
       memory fits the budget: `memory_budget_bytes`, default a quarter of the memory available now
       (`available_bytes`, read from the machine when not given).
    """
    def plan(kind: str, reason: str, budget: int | None = None) -> IndexPlan:
        ivf = kind.startswith("ivf")
        return IndexPlan(kind, reason, ivf_nlist(n_items, config) if ivf else None,
                         pq_bytes(dim) if kind == "ivf_pq" else None,
                         estimated_index_bytes(kind, n_items, dim, config), budget)

    if config.kind != "auto":
        return plan(config.kind, "set explicitly")
    if n_items * dim <= config.exact_max_scan:
        return plan("flat", f"items x dim = {n_items * dim:,} <= exact_max_scan {config.exact_max_scan:,}: exact scan is cheap")
    if n_items <= config.exact_max_items:
        return plan("hnsw", f"{n_items:,} items <= exact_max_items {config.exact_max_items:,} but vectors too wide "
                            f"for an exact scan (items x dim = {n_items * dim:,})")
    if config.memory_budget_bytes is not None:
        budget, source = config.memory_budget_bytes, "memory_budget_bytes"
    else:
        available = available_memory_bytes() if available_bytes is None else available_bytes
        budget, source = available // 4, f"a quarter of {available / 2**30:.1f} GiB available"
    for kind in ("ivf", "ivf_sq8", "ivf_pq"):
        need = estimated_index_bytes(kind, n_items, dim, config)
        if need <= budget:
            return plan(kind, f"{n_items:,} items > exact_max_items {config.exact_max_items:,}; "
                              f"{kind} needs ~{need / 2**20:,.0f} MiB <= budget {budget / 2**20:,.0f} MiB ({source})", budget)
    need = estimated_index_bytes("ivf_pq", n_items, dim, config)
    log.warning("no IVF layout fits the index memory budget (%d MiB; ivf_pq needs ~%d MiB): using ivf_pq anyway",
                budget // 2**20, need // 2**20)
    return plan("ivf_pq", f"nothing fits the budget {budget / 2**20:,.0f} MiB ({source}); ivf_pq is the smallest "
                          f"(~{need / 2**20:,.0f} MiB)", budget)


def calibration_queries(vectors: np.ndarray, n: int, user_vectors: np.ndarray | None = None,
                        seed: int = 0) -> np.ndarray:
    """Queries to tune recall on: a sample of real user vectors when the run has them, else
    user-like mixes of 1-3 random items plus noise (a multi-topic user: the hard case for IVF)."""
    rng = np.random.default_rng(seed)
    queries = np.zeros((0, vectors.shape[1]), dtype=np.float32)
    if user_vectors is not None and len(user_vectors):
        rows = rng.choice(len(user_vectors), min(n, len(user_vectors)), replace=False)
        queries = np.asarray(user_vectors[np.sort(rows)], dtype=np.float32)
        queries = queries[np.isfinite(queries).all(axis=1) & (np.linalg.norm(queries, axis=1) > 0)]
    if len(queries) < min(n, 30):  # no usable user vectors (users without history are zero rows)
        n_items, dim = vectors.shape
        queries = np.zeros((n, dim), dtype=np.float32)
        for row in range(n):
            picks = rng.integers(0, n_items, rng.integers(1, 4))
            queries[row] = vectors[np.sort(picks)].mean(0)  # equal weights: the query sits between topics
        queries += rng.standard_normal(queries.shape).astype(np.float32) * (0.1 / math.sqrt(dim))
    norms = np.linalg.norm(queries, axis=1, keepdims=True)
    return np.ascontiguousarray(queries[norms[:, 0] > 0] / norms[norms[:, 0] > 0], dtype=np.float32)


def recall_per_query(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per query, the share of the exact top-k found by the approximate top-k."""
    return np.array([len(set(a[a >= 0]) & set(e[e >= 0])) / max(1, int((e >= 0).sum())) for a, e in zip(approx, exact)])


def recall_at(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of the exact top-k found by the approximate top-k."""
    return float(np.mean(recall_per_query(approx, exact)))


class ItemIndex:
    """Top-k items by inner product with a query, optionally restricted to a mask of allowed items.

    Args:
        vectors: (n_items, d) float32, row = item_index (L2-normalised: inner product = cosine).
        config: index kind and its parameters.
        store: folder where an approximate index is built once and read / mapped by every process.
        user_vectors: the run's user vectors; a sample of them tunes the search knob (else synthetic queries).

    Example::

        index = ItemIndex(run.item_vectors, IndexConfig()); ids, scores = index.search(q, 20)
    """

    def __init__(self, vectors: np.ndarray, config: IndexConfig = IndexConfig(), *, store: Path | None = None,
                 mmap: bool = True, user_vectors: np.ndarray | None = None, available_bytes: int | None = None):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # no copy of a float32 memory map
        assert self.vectors.ndim == 2, f"expected a (n_items, d) matrix, got shape {self.vectors.shape}"
        self.n_items, self.dim = self.vectors.shape
        self.config = config
        self.plan = plan_index(self.n_items, self.dim, config, available_bytes)
        self.kind = self.plan.kind
        self.shared_file: Path | None = None
        self.search_params: dict[str, int] = {}
        self._params_cache: dict[tuple, tuple] = {}  # (fetch, selector id, knobs) -> (selector, params): `_params`
        self.recall: float | None = 1.0 if self.kind == "flat" else None
        self.recall_queries = 0
        self._user_vectors = user_vectors
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
        if self.kind != "flat" and not self.search_params:
            self._calibrate()
        self.build_seconds = time.perf_counter() - started
        log.info("%s %s index over %d items (d=%d) in %.2fs: %s", ("mapped" if self.mmap else "read") if self.shared_file else "built",
                 self.kind, self.n_items, self.dim, self.build_seconds, self.summary())

    def summary(self) -> str:
        """One line: parameters, measured recall and why this kind (the start-up log says it)."""
        params = ", ".join(f"{k} {v}" for k, v in {**({"nlist": self.plan.nlist} if self.plan.nlist else {}),
                                                    **self.search_params}.items())
        recall = "exact" if self.kind == "flat" else (f"recall@{_RECALL_K} {self.recall:.3f} on {self.recall_queries} "
                                                      f"queries (target {self.config.target_recall})")
        return f"{params + '; ' if params else ''}{recall}; {self.plan.reason}"

    def describe(self) -> dict:
        """The index as `/admin/model` reports it."""
        return {"kind": self.kind, "reason": self.plan.reason, "nlist": self.plan.nlist, "pq_bytes": self.plan.pq_bytes,
                "search_params": dict(self.search_params), "recall_at_20": None if self.recall is None else round(self.recall, 4),
                "recall_queries": self.recall_queries, "target_recall": self.config.target_recall,
                "estimated_bytes": self.plan.estimated_bytes, "memory_budget_bytes": self.plan.memory_budget_bytes,
                "build_seconds": round(self.build_seconds, 3),
                "source": ("mapped" if self.mmap else "read") if self.shared_file else ("exact" if self.index is None else "built")}

    def _build_threads(self) -> faiss.Index:
        previous_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(max(1, self.config.build_threads))
        try:
            return self._build()
        finally:
            faiss.omp_set_num_threads(previous_threads)

    def _shared(self, store: Path) -> faiss.Index:
        """The index built once into `store` and memory-mapped (`MMAP_FLAGS`): the server
        processes of one machine share its vectors / inverted lists through the page cache instead of
        holding one copy each (HNSW's graph stays per process). The first process builds it under a
        file lock and calibrates its search knob (kept beside it as JSON); the file name carries the
        plan, the index parameters and a sample of the vectors."""
        import fcntl  # noqa: PLC0415

        fingerprint = hashlib.sha256(repr((self.plan.kind, self.plan.nlist, self.plan.pq_bytes, self.config.hnsw_m,
                                           self.config.hnsw_ef_construction, self.config.ivf_train_iterations,
                                           self.vectors.shape)).encode())
        fingerprint.update(np.ascontiguousarray(self.vectors[:: max(1, self.n_items // 4096)]).tobytes())
        path = store / f"{self.kind}-{self.n_items}x{self.dim}-{fingerprint.hexdigest()[:16]}.faiss"
        tuning = path.with_suffix(f".tuned-{self._tuning_key()}.json")
        try:
            store.mkdir(parents=True, exist_ok=True)
            with open(store / ".build.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not path.exists():
                    tmp = path.with_suffix(f".tmp{os.getpid()}")
                    faiss.write_index(self._build_threads(), str(tmp))
                    tmp.replace(path)
                index = faiss.read_index(str(path), MMAP_FLAGS) if self.mmap else faiss.read_index(str(path))
                self.index = index
                try:
                    saved = json.loads(tuning.read_text())
                    self.search_params = {str(k): int(v) for k, v in saved["search_params"].items()}
                    self.recall, self.recall_queries = float(saved["recall"]), int(saved["queries"])
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    # none yet (or unreadable): under the lock one process calibrates, the others read its result
                    self._calibrate()
                    tmp = tuning.with_suffix(f".tmp{os.getpid()}")
                    tmp.write_text(json.dumps({"search_params": self.search_params, "recall": self.recall,
                                               "queries": self.recall_queries}))
                    tmp.replace(tuning)
        except (OSError, RuntimeError) as err:  # a read-only or full disk: one private copy still serves
            log.warning("index file %s unusable (%s); building a private %s index", path, err, self.kind)
            self.search_params = {}
            return self._build_threads()
        self.shared_file = path
        return index

    def _tuning_key(self) -> str:
        """What the calibration depends on besides the index: its target, the fixed knobs and the queries."""
        digest = hashlib.sha256(repr((self.config.target_recall, self.config.calibration_queries, self.config.hnsw_ef_search,
                                      self.config.ivf_nprobe, self.config.pq_refine)).encode())
        if self._user_vectors is not None:
            digest.update(np.ascontiguousarray(self._user_vectors[:: max(1, len(self._user_vectors) // 512)]).tobytes())
        return digest.hexdigest()[:12]

    def _build(self) -> faiss.Index:
        d = self.dim
        if self.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.config.hnsw_ef_construction
        elif self.kind in ("ivf", "ivf_sq8", "ivf_pq"):
            nlist, quantizer = self.plan.nlist, faiss.IndexFlatIP(d)
            if self.kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            elif self.kind == "ivf_sq8":
                index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                      faiss.METRIC_INNER_PRODUCT)
            else:
                index = faiss.IndexIVFPQ(quantizer, d, nlist, self.plan.pq_bytes, 8, faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = self.config.ivf_train_iterations  # k-means rounds: the build's main cost after assignment
            rng = np.random.default_rng(0)
            n_train = max(nlist * 64, 256 * 64 if self.kind == "ivf_pq" else 0)
            sample = self.vectors if self.n_items <= n_train else self.vectors[np.sort(rng.choice(self.n_items, n_train, replace=False))]
            index.train(np.ascontiguousarray(sample))
        else:
            raise ValueError(f"unknown index kind {self.kind!r} (expected {', '.join(KINDS)})")
        for start in range(0, self.n_items, 1_000_000):  # chunks: no full-size temporaries at 10M items
            index.add(self.vectors[start:start + 1_000_000])
        return index

    def _calibrate(self) -> None:
        """Choose the smallest search knob whose recall@20 against exact search reaches the target
        on a query sample, with a margin: the mean less two standard errors must reach it, so
        other users (not in the sample) get the target too. A knob fixed in the config is only measured."""
        fixed = self.config.hnsw_ef_search if self.kind == "hnsw" else self.config.ivf_nprobe
        name = "efSearch" if self.kind == "hnsw" else "nprobe"
        ladder = [fixed] if fixed is not None else [v for v in (_EF_LADDER if self.kind == "hnsw" else _NPROBE_LADDER)
                                                    if self.kind == "hnsw" or v <= self.plan.nlist]
        if self.kind != "hnsw" and fixed is None and ladder[-1] != self.plan.nlist and self.plan.nlist < _NPROBE_LADDER[-1]:
            ladder.append(self.plan.nlist)  # every list: exact over the stored codes
        queries = calibration_queries(self.vectors, self.config.calibration_queries, self._user_vectors)
        previous_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(max(1, self.config.build_threads))
        try:
            k = min(_RECALL_K, self.n_items)
            _, exact = faiss.knn(queries, self.vectors, k, faiss.METRIC_INNER_PRODUCT)
            for value in ladder:
                self.search_params = {name: int(value)}
                per_query = recall_per_query(self.search_batch(queries, k)[0], exact)
                self.recall = float(per_query.mean())
                if self.recall - 2 * per_query.std() / math.sqrt(len(per_query)) >= self.config.target_recall:
                    break
        finally:
            faiss.omp_set_num_threads(previous_threads)
        self.recall_queries = len(queries)
        if self.recall < self.config.target_recall:
            log.warning("%s index: recall@%d %.3f at %s %d is below the target %.2f", self.kind, _RECALL_K, self.recall,
                        name, self.search_params[name], self.config.target_recall)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the serialised index (vectors + graph or lists): what it costs in RAM (flat: the vectors)."""
        if self.index is None:
            return int(self.vectors.nbytes)
        if self.shared_file is not None:
            return self.shared_file.stat().st_size
        return int(faiss.serialize_index(self.index).nbytes)

    def _params(self, fetch: int, selector: faiss.IDSelector | None) -> faiss.SearchParameters | None:
        """The search parameters for `fetch` results through `selector`, built once per pair: building a
        SWIG parameter object per query cost as much as the HNSW search itself (TikTok: ~0.05 ms)."""
        key = (fetch, id(selector), *self.search_params.values())  # calibration changes the knob
        cached = self._params_cache.get(key)
        if cached is None or cached[0] is not selector:
            if len(self._params_cache) > 4096:  # many filters come and go (take-downs): start over
                self._params_cache.clear()
            cached = self._params_cache[key] = (selector, self._new_params(fetch, selector))
        return cached[1]

    def _new_params(self, fetch: int, selector: faiss.IDSelector | None) -> faiss.SearchParameters | None:
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.search_params.get("efSearch", 96), fetch))
        if self.kind.startswith("ivf"):
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.search_params.get("nprobe", 32))
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _raw(self, queries: np.ndarray, fetch: int, selector: faiss.IDSelector | None) -> tuple[np.ndarray, np.ndarray]:
        """FAISS top-`fetch` (scores, ids); PQ's approximate scores are re-ranked exactly over
        `pq_refine` x `fetch` candidates read from the (memory-mapped) vectors."""
        if self.kind != "ivf_pq":
            return self.index.search(queries, fetch, params=self._params(fetch, selector))
        wide = min(fetch * self.config.pq_refine, self.n_items)
        _, ids = self.index.search(queries, wide, params=self._params(wide, selector))
        exact = np.einsum("bkd,bd->bk", self.vectors[np.maximum(ids, 0)], queries)
        exact[ids < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :fetch]
        return np.take_along_axis(exact, order, 1), np.take_along_axis(ids, order, 1)

    def search_batch(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Unfiltered top-k for many queries: (ids (b, k), scores (b, k)); ids are -1 past the end."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.index is None:
            return self.exact_batch(queries, k)
        scores, ids = self._raw(queries, k, None)
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
            scores, ids = self._raw(query, fetch, selector)
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
