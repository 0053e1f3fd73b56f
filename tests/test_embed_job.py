"""The embed job on a small catalogue of real files (photos, synthesised audio, text) with planted
corrupt and missing files; on real TikTok features and real ML-100K titles; and through the CLI.

Image vectors here come from RANDOM ViT-B-32 weights (no CLIP weights ship offline).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from fixtures_media.media import plant_corrupt, shared_encoder, write_audio, write_images
from recsys.data import load_dataset
from recsys.encoders import ContentEncoder, EncoderWeightsError, encoders_for_item_vectors
from training.embed_job import EmbedConfig, load_item_content_meta, load_item_content_vectors, run_embed_job


class Killed(RuntimeError):
    """Stands in for a SIGKILL in the middle of a job."""


class CountingEncoder(ContentEncoder):
    """Delegates to a real encoder, counting model calls; can die after `fail_after` calls."""

    def __init__(self, inner: ContentEncoder, fail_after: int | None = None) -> None:
        self.inner, self.fail_after = inner, fail_after
        self.medium, self.dim, self.version, self.normalized = inner.medium, inner.dim, inner.version, inner.normalized
        self.spec = getattr(inner, "spec", None)
        self.calls = self.items = 0

    def prepare(self, source: Any) -> Any:
        return self.inner.prepare(source)

    def encode_prepared(self, items: Sequence[Any]) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise Killed(f"killed after {self.calls} batches")
        self.calls += 1
        self.items += len(items)
        return self.inner.encode_prepared(items)


def encoders(**overrides: Any) -> dict[str, ContentEncoder]:
    base = {"text": shared_encoder("text"), "image": shared_encoder("image"), "audio": shared_encoder("audio", "librosa")}
    return {**base, **overrides}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Path:
    """items.csv + interactions.csv; URIs relative, absolute and file://; a duplicate photo; a
    truncated PNG, a garbage WAV and missing files."""
    root = tmp_path_factory.mktemp("catalogue")
    images, audio = write_images(root / "media"), write_audio(root / "media")
    plant_corrupt(root / "media")
    rows = [
        ("i1", "Astronaut", "A portrait of an astronaut in a white spacesuit", "media/astronaut.png", "media/tone_a440.wav"),
        ("i2", "Coffee", "A cup of coffee on a saucer", str(images["coffee"]), str(audio["noise"])),
        ("i3", "Cat", "A tabby cat looking at the camera", images["chelsea"].as_uri(), "media/chirp.ogg"),
        ("i4", "Broken", "An item whose files are corrupt", "media/truncated.png", "media/garbage.wav"),
        ("i5", "Gone", "An item whose files were deleted", "media/nope.png", "media/nope.wav"),
        ("i6", "Astronaut again", "The same photo under another id", "media/astronaut.png", "media/tone_a440.wav"),
        ("i7", "Text only", "An item with a description and no media", None, None),
        ("i8", "Cameraman", "A black and white photo of a cameraman", "media/camera.png", "media/tone_low.flac"),
    ]
    items = pl.DataFrame(rows, schema=["item_id", "title", "text", "image_uri", "audio_uri"], orient="row")
    items.write_csv(root / "items.csv")
    pl.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["i1", "i2", "i3"], "timestamp": [1, 2, 3]}).write_csv(
        root / "interactions.csv")
    return root


@pytest.fixture(scope="module")
def first_run(catalogue, tmp_path_factory):
    """One full run over the catalogue (all media), shared by the tests that inspect or rerun it."""
    config = EmbedConfig(batch_size=2, store_dir=tmp_path_factory.mktemp("store"), progress=False)
    return run_embed_job(catalogue, config, encoders()), config


def test_corrupt_and_missing_files_are_reported_and_the_rest_completes(catalogue, first_run) -> None:
    report, config = first_run
    tmp_path = config.store_dir
    failed = {(f.medium, f.item_id): f for f in report.failures}
    assert set(failed) == {("image", "i4"), ("image", "i5"), ("audio", "i4"), ("audio", "i5")}
    assert "cannot decode image" in failed["image", "i4"].reason and failed["image", "i4"].source == "media/truncated.png"
    assert "cannot decode audio" in failed["audio", "i4"].reason
    assert failed["image", "i5"].reason == "file not found" and failed["audio", "i5"].source == "media/nope.wav"

    vectors = load_item_content_vectors(catalogue, store_dir=tmp_path)
    expected_mask = {"text": [1, 1, 1, 1, 1, 1, 1, 1], "image": [1, 1, 1, 0, 0, 1, 0, 1], "audio": [1, 1, 1, 0, 0, 1, 0, 1]}
    for medium, mask in expected_mask.items():
        matrix, got = vectors[medium]
        assert got.tolist() == [bool(m) for m in mask] and matrix.dtype == np.float32
        assert np.isfinite(matrix).all() and not matrix[~got].any()
        np.testing.assert_allclose(np.linalg.norm(matrix[got], axis=1), 1.0, atol=1e-5)
    image, _ = vectors["image"]
    np.testing.assert_allclose(image[0], image[5], atol=1e-6)  # same bytes, one vector
    np.testing.assert_allclose(image[0], shared_encoder("image").encode_one(catalogue / "media/astronaut.png"), atol=1e-5)
    assert report.media["image"].encoded == 4 and report.media["image"].reused == 1  # i6 reuses i1's photo
    assert (report.media["text"].dim, report.media["image"].dim, report.media["audio"].dim) == (384, 512, 85)
    meta = load_item_content_meta(catalogue, store_dir=tmp_path)
    assert "random" in meta["encoders"]["image"]["version"] and meta["encoders"]["audio"]["spec"]["encoder"] == "librosa"


def test_second_run_encodes_nothing(catalogue, first_run) -> None:
    first, config = first_run
    counting = {m: CountingEncoder(e) for m, e in encoders().items()}
    second = run_embed_job(catalogue, config, counting)
    assert all(c.calls == 0 for c in counting.values())
    for medium, r in second.media.items():
        assert r.encoded == 0 and r.reused == r.embedded == first.media[medium].embedded
    assert len(second.failures) == 4  # corrupt files are reported again, not cached as vectors


def test_serving_rebuilds_the_item_side_encoder_and_finds_the_same_file(catalogue, first_run) -> None:
    store = first_run[1].store_dir
    meta = load_item_content_meta(catalogue, store_dir=store)
    audio_only = {"encoders": {"audio": meta["encoders"]["audio"], "image": {"precomputed": True, "spec": None}}}
    query_encoders = encoders_for_item_vectors(audio_only)
    assert set(query_encoders) == {"audio"}
    vectors, mask = load_item_content_vectors(catalogue, store)["audio"]
    query = query_encoders["audio"].encode_one((catalogue / "media/tone_a440.wav").read_bytes())  # an "upload"
    assert int(np.argmax(vectors @ query)) in (0, 5)  # i1 / i6 hold that very file
    stale = {"encoders": {"audio": {**meta["encoders"]["audio"], "version": "audio-made-by-older-weights"}}}
    with pytest.raises(EncoderWeightsError, match="rerun"):
        encoders_for_item_vectors(stale)


def test_killed_job_resumes_and_encodes_only_the_remainder(catalogue, tmp_path) -> None:
    config = EmbedConfig(media=("text",), batch_size=2, store_dir=tmp_path / "store", progress=False)
    dying = CountingEncoder(shared_encoder("text"), fail_after=2)
    with pytest.raises(Killed):
        run_embed_job(catalogue, config, {"text": dying})
    assert dying.items == 4
    resumed = CountingEncoder(shared_encoder("text"))
    report = run_embed_job(catalogue, config, {"text": resumed})
    assert resumed.items == 8 - 4 and report.media["text"].encoded == 4 and report.media["text"].reused == 4
    clean = run_embed_job(catalogue, dataclasses.replace(config, store_dir=tmp_path / "clean"), encoders())
    np.testing.assert_allclose(load_item_content_vectors(catalogue, tmp_path / "store")["text"][0],
                               load_item_content_vectors(catalogue, clean.artefact.parents[1])["text"][0], atol=1e-5)


def test_later_runs_add_media_to_the_artefact(catalogue, tmp_path) -> None:
    config = EmbedConfig(media=("audio",), store_dir=tmp_path, progress=False, out=tmp_path / "copy.npz")
    run_embed_job(catalogue, config, encoders())
    run_embed_job(catalogue, dataclasses.replace(config, media=("text",)), encoders())
    assert set(load_item_content_vectors(catalogue, tmp_path)) == {"text", "audio"}
    assert set(load_item_content_vectors(catalogue, path=tmp_path / "copy.npz")) == {"text", "audio"}


def test_tiktok_precomputed_features_pass_through(tmp_path) -> None:
    ds = load_dataset("tiktok")
    report = run_embed_job(ds, EmbedConfig(store_dir=tmp_path, progress=False))
    assert set(report.media) == {"image", "audio"} and all(r.precomputed for r in report.media.values())
    vectors = load_item_content_vectors(ds, tmp_path)
    for medium in ("image", "audio"):
        matrix, mask = vectors[medium]
        assert matrix.shape == (6710, 128)
        np.testing.assert_array_equal(matrix, ds.item_features[medium].astype(np.float32))
        np.testing.assert_array_equal(mask, ds.feature_mask[medium])


def test_ml100k_titles_and_genres_embed_as_text(tmp_path) -> None:
    full = load_dataset("ml-100k")
    ds = dataclasses.replace(full, items=full.items.head(40))  # the first 40 real films keep the test fast
    with pytest.raises(ValueError, match="no image content"):
        run_embed_job(ds, EmbedConfig(media=("image",), store_dir=tmp_path, progress=False))
    report = run_embed_job(ds, EmbedConfig(store_dir=tmp_path, progress=False), encoders())
    assert set(report.media) == {"text"} and report.media["text"].embedded == 40
    matrix, mask = load_item_content_vectors(ds, tmp_path)["text"]
    assert matrix.shape == (40, 384) and mask.all()
    with pytest.raises(ValueError, match="different item list"):
        load_item_content_vectors(dataclasses.replace(full, items=full.items.head(41)), tmp_path)


def cli() -> typer.Typer:
    from commands.embed import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Stand-in for the `recsys` group."""

    register(app)
    return app


def test_cli_embeds_and_lists_each_skipped_file(catalogue, tmp_path, monkeypatch) -> None:
    import training.embed_job as job

    monkeypatch.setattr(job, "build_encoder", lambda medium, spec=None: encoders()[medium])  # reuse loaded models
    result = CliRunner().invoke(cli(), ["embed", "--dataset", str(catalogue), "--media", "text,audio", "--audio-encoder",
                                        "librosa", "--store-dir", str(tmp_path), "--no-progress", "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert "audio item i4: media/garbage.wav: cannot decode audio" in result.output
    assert "audio item i5: media/nope.wav: file not found" in result.output
    assert set(load_item_content_vectors(catalogue, tmp_path)) == {"text", "audio"}


def test_cli_embeds_images_with_the_packaged_efficientnet_unless_told_otherwise(catalogue, tmp_path) -> None:
    result = CliRunner().invoke(cli(), ["embed", "--dataset", str(catalogue), "--media", "image", "--store-dir",
                                        str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    meta = load_item_content_meta(catalogue, tmp_path)
    assert meta["encoders"]["image"]["version"].startswith("image-efficientnet-lite0-")
    assert "random" not in meta["encoders"]["image"]["version"]
    both = CliRunner().invoke(cli(), ["embed", "--dataset", str(catalogue), "--image-random-weights",
                                      "--image-pretrained", "openai", "--store-dir", str(tmp_path)])
    assert both.exit_code != 0 and "choose one" in both.output
