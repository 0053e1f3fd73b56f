"""Audio encoders (packaged aisfx CNN, librosa statistics) on synthesised tones, noise and chirps."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from fixtures_media.media import SR, cosine, plant_corrupt, shared_encoder, tone, wav_bytes, write_audio
from recsys.encoders import AudioSpec, EncoderInputError, build_encoder
from recsys.encoders.media_io import fixed_windows

KINDS = {"aisfx": 512, "librosa": 85}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_audio(tmp_path_factory.mktemp("audio"))


@pytest.fixture(scope="module", params=list(KINDS))
def encoder(request):
    return shared_encoder("audio", request.param)


def test_wav_flac_ogg_short_and_long_clips_give_unit_finite_vectors(encoder, clips) -> None:
    vectors = encoder.encode([clips[k] for k in ("tone_a440", "tone_a440_short", "tone_low", "noise", "chirp")])
    assert vectors.shape == (5, KINDS[encoder.spec.encoder]) == (5, encoder.dim)
    assert vectors.dtype == np.float32 and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_bytes_path_and_samples_agree_and_repeat_exactly(encoder, clips) -> None:
    path = clips["chirp"]
    by_path = encoder.encode_one(path)
    np.testing.assert_allclose(encoder.encode_one(path.read_bytes()), by_path, atol=1e-6)
    np.testing.assert_allclose(encoder.encode_one(str(path)), by_path, atol=1e-6)
    samples = tone(440, 3.0)
    np.testing.assert_allclose(encoder.encode_one((samples, SR)), encoder.encode_one(wav_bytes(samples, subtype="FLOAT")), atol=1e-5)


def test_same_sound_is_closer_than_a_different_sound(encoder, clips) -> None:
    v = dict(zip(("a440", "a440_16k", "a440_short", "noise"),
                 encoder.encode([clips["tone_a440"], clips["tone_a440_16k"], clips["tone_a440_short"], clips["noise"]])))
    # resampled (16 kHz -> model rate) and tiled (0.4 s -> one window) copies of one tone stay close
    assert cosine(v["a440"], v["a440_16k"]) > cosine(v["a440"], v["noise"])
    assert cosine(v["a440"], v["a440_short"]) > cosine(v["a440"], v["noise"])
    assert cosine(v["a440"], v["a440_16k"]) > 0.95


def test_only_the_first_max_seconds_are_used() -> None:
    capped = build_encoder("audio", AudioSpec(encoder="librosa", max_seconds=3.0))
    head = tone(440, 3.0)
    longer = np.concatenate([head, np.random.default_rng(0).normal(0, 0.3, 5 * SR).astype(np.float32)])
    np.testing.assert_allclose(capped.encode_one((longer, SR)), capped.encode_one((head, SR)), atol=1e-6)
    assert "max3s" in capped.version


def test_windows_are_fixed_length_and_short_clips_tiled() -> None:
    assert fixed_windows(np.ones(10, np.float32), 4).shape == (3, 4)  # 2 full + remainder 2 >= half
    assert fixed_windows(np.ones(9, np.float32), 4).shape == (2, 4)   # remainder 1 < half is dropped
    assert fixed_windows(np.arange(3, dtype=np.float32), 8).tolist() == [[0, 1, 2, 0, 1, 2, 0, 1]]


def test_garbage_empty_and_missing_audio_raise_input_errors(encoder, tmp_path) -> None:
    bad = plant_corrupt(tmp_path)
    for key, reason in (("garbage_wav", "cannot decode audio"), ("empty_wav", "empty"), ("missing", "not found"),
                        ("truncated_png", "cannot decode audio")):
        with pytest.raises(EncoderInputError, match=reason):
            encoder.prepare(bad[key])


def test_versions_name_encoder_rate_and_window() -> None:
    assert shared_encoder("audio", "aisfx").version.startswith("audio-aisfx-")
    assert "sr44100" in shared_encoder("audio", "aisfx").version
    assert "sr22050" in shared_encoder("audio", "librosa").version
    assert build_encoder("audio").version == shared_encoder("audio", "aisfx").version  # aisfx is the default


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed on this machine")
def test_spoken_words_embed_like_other_audio(encoder, tmp_path) -> None:
    speech = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "a quiet film about chess"], check=True, timeout=60)
    vector = encoder.encode_one(speech)
    assert np.isfinite(vector).all() and abs(np.linalg.norm(vector) - 1) < 1e-5
