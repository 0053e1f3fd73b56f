"""Precomputed vectors (TikTok's .npy features) behind the same interface, and the factory rules."""
from __future__ import annotations

import numpy as np
import pytest

from recsys.encoders import (AudioSpec, EncoderInputError, ImageSpec, PrecomputedSpec, TextSpec, build_encoder,
                             spec_from_dict, spec_to_dict)


def test_precomputed_vectors_are_looked_up_by_item_id_or_index() -> None:
    table = np.arange(12, dtype=np.float16).reshape(4, 3)
    encoder = build_encoder("image", PrecomputedSpec(table, ("a", "b", "c", "d"), np.array([1, 1, 0, 1], bool), "demo"))
    assert encoder.medium == "image" and encoder.dim == 3 and encoder.version.startswith("image-precomputed-demo-")
    np.testing.assert_array_equal(encoder.encode(["b", 3]), table[[1, 3]].astype(np.float32))
    for bad in ("c", "zz", 9, 1.5):
        with pytest.raises(EncoderInputError):
            encoder.prepare(bad)


def test_real_tiktok_features_pass_through_unchanged() -> None:
    from recsys.data import load_dataset

    ds = load_dataset("tiktok")
    encoder = build_encoder("audio", PrecomputedSpec(ds.item_features["audio"], tuple(ds.item_ids),
                                                     ds.feature_mask["audio"], "tiktok"))
    np.testing.assert_array_equal(encoder.encode(["0", "6709"]), ds.item_features["audio"][[0, 6709]])


def test_factory_rejects_a_spec_of_another_medium_and_unknown_media() -> None:
    with pytest.raises(TypeError):
        build_encoder("text", AudioSpec())
    with pytest.raises(ValueError):
        build_encoder("smell")


def test_specs_round_trip_through_json_dicts() -> None:
    for medium, spec in (("text", TextSpec(batch_size=8)), ("image", ImageSpec(checkpoint="/m/clip.pt")),
                         ("audio", AudioSpec(encoder="librosa", max_seconds=30.0))):
        assert spec_from_dict(medium, spec_to_dict(spec)) == spec
