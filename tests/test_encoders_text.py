"""The packaged MiniLM text encoder: 384-d unit vectors, deterministic, meaningful, offline."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fixtures_media.media import cosine, shared_encoder  # noqa: E402
from recsys.encoders import EncoderInputError, EncoderWeightsError, TextSpec, build_encoder  # noqa: E402

TEXTS = [
    "Toy Story (1995). Genres: Animation Children's Comedy",
    "A cowboy doll is threatened by a new spaceman toy in a boy's bedroom.",
    "GoldenEye (1995). Genres: Action Adventure Thriller",
    "Quarterly tax filing deadlines for small businesses",
]


@pytest.fixture(scope="module")
def encoder():
    return shared_encoder("text")


def test_minilm_gives_unit_384d_finite_vectors(encoder) -> None:
    vectors = encoder.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 384) and encoder.dim == 384
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_text_gives_same_vector_alone_or_in_a_batch(encoder) -> None:
    batch = encoder.encode(TEXTS)
    again = encoder.encode(TEXTS)
    alone = encoder.encode_one(TEXTS[2])
    np.testing.assert_allclose(batch, again, atol=1e-6)
    np.testing.assert_allclose(batch[2], alone, atol=1e-5)


def test_related_texts_are_closer_than_unrelated(encoder) -> None:
    v = encoder.encode(TEXTS)
    assert cosine(v[0], v[1]) > cosine(v[0], v[3]) + 0.1


def test_query_bytes_are_decoded_as_utf8_and_formatting_is_ignored(encoder) -> None:
    from_bytes = encoder.encode_one("Café  au lait\n".encode())
    np.testing.assert_allclose(from_bytes, encoder.encode_one("Café au lait"), atol=1e-6)
    with pytest.raises(EncoderInputError):
        encoder.prepare(b"\xff\xfe\xfa")
    with pytest.raises(EncoderInputError):
        encoder.prepare(42)


def test_version_names_model_and_weights_and_is_stable(encoder) -> None:
    assert encoder.version.startswith("text-st-all-MiniLM-L6-v2-")
    assert "/" not in encoder.version
    assert build_encoder("text", TextSpec()).version == encoder.version


def test_unknown_model_name_is_never_downloaded(tmp_path) -> None:
    with pytest.raises(EncoderWeightsError, match="never downloaded"):
        build_encoder("text", TextSpec(model="someone/model-that-is-not-cached-here"))
