"""Cross-media recall: aligned media find each other, unrelated media score at chance."""
from __future__ import annotations

import numpy as np
import pytest

from training.evaluation_cross_media import cross_media_recall, cross_media_report
from training.evaluation_protocol import EvaluationError


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


RNG = np.random.default_rng(0)
N_ITEMS, HELD_OUT = 1000, np.arange(600, 1000)  # 400 held-out items


def test_perfectly_aligned_media_give_recall_one():
    image = unit(RNG.normal(size=(N_ITEMS, 32)))
    report = cross_media_report({"image": image, "audio": image.copy()}, HELD_OUT)
    for key in ("image_to_audio_recall@10", "audio_to_image_recall@10",
                "image_to_audio_recall@10_all_items", "audio_to_image_recall@10_all_items"):
        assert report[key] == 1.0, key
    assert report["chance@10"] == pytest.approx(10 / 400) and report["n_held_out"] == 400


def test_unrelated_media_score_near_chance():
    image, audio = unit(RNG.normal(size=(N_ITEMS, 32))), unit(RNG.normal(size=(N_ITEMS, 32)))
    report = cross_media_report({"image": image, "audio": audio}, HELD_OUT)
    chance = report["chance@10"]  # 0.025; 400 queries -> std ~0.008
    assert abs(report["image_to_audio_recall@10"] - chance) < 0.03
    assert abs(report["audio_to_image_recall@10"] - chance) < 0.03
    assert report["image_to_audio_recall@10_all_items"] < 0.04  # chance 0.01


def test_noisy_alignment_lies_between():
    image = unit(RNG.normal(size=(N_ITEMS, 32)))
    audio = unit(image + 3.0 * unit(RNG.normal(size=(N_ITEMS, 32))))
    recall = cross_media_recall(image, audio, HELD_OUT, HELD_OUT, k=10)
    assert 0.1 < recall < 0.9
    assert cross_media_recall(image, audio, HELD_OUT, np.arange(N_ITEMS), k=10) <= recall


def test_items_missing_a_medium_are_left_out():
    image = unit(RNG.normal(size=(N_ITEMS, 8)))
    audio = image.copy()
    audio[HELD_OUT[:100]] = 0  # 100 held-out items have no audio
    report = cross_media_report({"image": image, "audio": audio}, HELD_OUT)
    assert report["image_to_audio_recall@10"] == 1.0  # the 300 with both media still find themselves


def test_needs_two_media_and_held_out_items():
    with pytest.raises(EvaluationError, match="two media"):
        cross_media_report({"text": np.ones((3, 2), np.float32)}, np.array([0]))
    with pytest.raises(EvaluationError, match="held-out"):
        cross_media_report({"image": np.ones((3, 2), np.float32), "audio": np.ones((3, 2), np.float32)}, np.array([], int))
