"""open_clip image encoder on real scikit-image photographs.

These tests use RANDOM (seeded) ViT-B-32 weights, because no CLIP weights ship offline: they
prove decoding, preprocessing, shapes, determinism and the weights-source rules, not visual
semantics.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from fixtures_media.media import image_array, plant_corrupt, shared_encoder, write_images
from recsys.encoders import EncoderInputError, EncoderWeightsError, ImageSpec, build_encoder
from recsys.encoders.image import weights_source


@pytest.fixture(scope="module")
def encoder():
    return shared_encoder("image")  # random weights


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"))


def test_png_jpeg_gray_and_rgba_photos_give_unit_512d_vectors(encoder, images) -> None:
    vectors = encoder.encode([images["astronaut"], str(images["coffee"]), images["camera"], images["chelsea_rgba"]])
    assert vectors.shape == (4, 512) and vectors.dtype == np.float32 and encoder.dim == 512
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)  # different photos, different vectors
    assert "random" in encoder.version  # these tests run on RANDOM weights


def test_path_bytes_pil_and_array_of_one_image_agree(encoder, images) -> None:
    path = images["chelsea"]
    v = encoder.encode([path, path.read_bytes(), Image.open(path), image_array("chelsea")])
    for row in v[1:]:
        np.testing.assert_allclose(row, v[0], atol=1e-5)
    np.testing.assert_allclose(encoder.encode_one(path), v[0], atol=1e-5)  # batch of one = row of a batch


def test_truncated_garbage_and_missing_files_raise_input_errors(encoder, tmp_path) -> None:
    bad = plant_corrupt(tmp_path)
    for key, reason in (("truncated_png", "cannot decode image"), ("garbage_wav", "cannot decode image"),
                        ("empty_wav", "empty"), ("missing", "not found")):
        with pytest.raises(EncoderInputError, match=reason):
            encoder.prepare(bad[key])
    with pytest.raises(EncoderInputError):
        encoder.prepare(12345)


def test_no_weights_choice_is_refused_with_the_options() -> None:
    with pytest.raises(EncoderWeightsError, match="--image-random-weights"):
        build_encoder("image", ImageSpec(encoder="open_clip"))
    with pytest.raises(EncoderWeightsError, match="choose one"):
        weights_source(ImageSpec(pretrained="openai", allow_random_weights=True))
    with pytest.raises(EncoderWeightsError, match="does not exist"):
        weights_source(ImageSpec(checkpoint="/nonexistent/clip.pt"))


def test_pretrained_tag_is_passed_through_only_when_asked() -> None:
    # Resolving the source must not download anything; building would (so it is not done here).
    assert weights_source(ImageSpec(pretrained="laion2b_s34b_b79k")) == ("laion2b_s34b_b79k", "tag-laion2b_s34b_b79k")


@pytest.fixture(scope="module")
def small_random():
    """A second, smaller random tower (ViT-S-32) for the seeding and checkpoint tests."""
    return build_encoder("image", ImageSpec(arch="ViT-S-32", allow_random_weights=True, seed=7))


def test_seeded_random_weights_are_flagged_logged_and_identical_across_instances(small_random, images, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        again = build_encoder("image", ImageSpec(arch="ViT-S-32", allow_random_weights=True, seed=7))
    assert any("RANDOM weights" in r.getMessage() for r in caplog.records)
    assert "random-seed7" in again.version and again.random_weights and again.version == small_random.version
    np.testing.assert_allclose(again.encode_one(images["astronaut"]), small_random.encode_one(images["astronaut"]),
                               atol=1e-5)


def test_local_checkpoint_loads_and_is_named_by_content(small_random, tmp_path, images) -> None:
    import torch

    checkpoint = tmp_path / "vit-s-32.pt"
    torch.save(small_random.model.state_dict(), checkpoint)
    from_file = build_encoder("image", ImageSpec(arch="ViT-S-32", checkpoint=str(checkpoint)))
    assert "random" not in from_file.version and "-ckpt" in from_file.version
    np.testing.assert_allclose(from_file.encode_one(images["coffee"]), small_random.encode_one(images["coffee"]),
                               atol=1e-5)
