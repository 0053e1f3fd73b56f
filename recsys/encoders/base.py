"""The one contract every content encoder meets, whatever the medium.

The embed job, the training code and the serving search endpoint all speak to encoders through
`ContentEncoder`, so a text model, a CLIP image tower, an audio CNN and a table of precomputed
vectors are interchangeable. Encoding is split in two steps on purpose:

* `prepare(source)` decodes and preprocesses ONE input and raises `EncoderInputError` when that
  input is unusable (corrupt PNG, garbage WAV, wrong type). Callers can therefore skip and report
  a bad item without losing the rest of its batch.
* `encode_prepared(items)` runs the model on a batch of prepared inputs. Errors here are real
  failures (bug, out of memory) and propagate.

`version` names everything that changes the output (model, weights, preprocessing); it is the
key of the embedding cache, so two encoders with the same version must produce the same vectors.
"""
from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np


class EncoderInputError(ValueError):
    """One input cannot be encoded (missing, corrupt, wrong type); the batch can go on without it."""


class EncoderWeightsError(RuntimeError):
    """An encoder was asked for without usable weights (nothing is ever downloaded at run time)."""


class ContentEncoder(ABC):
    """Turns content of one medium (text, image, audio, or an item id for precomputed vectors)
    into float32 vectors of a fixed size.

    Attributes:
        medium: ``text``, ``image`` or ``audio``.
        dim: size of every output vector.
        version: filesystem-safe string that changes whenever model, weights or preprocessing
            change; used as the embedding cache key.
        normalized: True when outputs are L2-normalised (dot product = cosine similarity).

    Example::

        vector = build_encoder("text").encode_one("a quiet film about chess")
    """

    medium: str
    dim: int
    version: str
    normalized: bool = True

    @abstractmethod
    def prepare(self, source: Any) -> Any:
        """Decode and preprocess one input; raise `EncoderInputError` if it is unusable."""

    @abstractmethod
    def encode_prepared(self, items: Sequence[Any]) -> np.ndarray:
        """Run the model on prepared inputs; returns float32 (len(items), dim)."""

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        """Encode raw inputs (see each encoder for the accepted types); float32 (n, dim).

        Raises `EncoderInputError` on the first unusable input.
        """
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_prepared([self.prepare(x) for x in batch])

    def encode_one(self, source: Any) -> np.ndarray:
        """Encode a single input (a query text, uploaded image bytes, uploaded audio bytes); (dim,)."""
        return self.encode([source])[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(medium={self.medium!r}, dim={self.dim}, version={self.version!r})"


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows (zero rows stay zero), as float32: dot product becomes cosine similarity."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def check_output(vectors: np.ndarray, n: int, dim: int, who: str) -> np.ndarray:
    """Every encoder's last step: the shape and finiteness promised by the contract."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    assert vectors.shape == (n, dim), f"{who}: expected output shape {(n, dim)}, got {vectors.shape}"
    if not np.isfinite(vectors).all():
        raise FloatingPointError(f"{who}: produced NaN or infinite values")
    return vectors


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str) -> str:
    """A version component that is safe as a directory name."""
    return _UNSAFE.sub("-", text).strip("-") or "x"


@lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_fingerprint(path: str | Path, length: int = 10) -> str:
    """Content hash of a weights file or model folder, so retrained weights get a new version.

    A folder hashes its weight files (*.safetensors, *.bin, *.pt, *.pth, *.ckpt) and its JSON
    configs by name and content. Results are memoised per (path, size, mtime).
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json"})
    h = hashlib.sha256()
    for file in files:
        stat = file.stat()
        if file != path:  # a lone file is named by content only, so renaming it keeps the cache
            h.update(str(file.relative_to(path)).encode())
        h.update(_file_digest(str(file.resolve()), stat.st_size, stat.st_mtime_ns).encode())
    return h.hexdigest()[:length]
