"""Reading and decoding image/audio inputs from a path, raw bytes or an in-memory object.

The embed job reads a file once, hashes the bytes for the cache and decodes the same bytes; the
search endpoint receives uploads as bytes. Both paths go through here, so a corrupt upload and
a corrupt catalogue file fail the same way: `EncoderInputError` with a reason a person can act on.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from recsys.encoders.base import EncoderInputError

BytesLike = bytes | bytearray | memoryview
PathLike = str | os.PathLike


def read_source_bytes(source: PathLike | BytesLike) -> bytes:
    """The raw bytes of a path or bytes-like input; `EncoderInputError` if missing/unreadable."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if not isinstance(source, (str, os.PathLike)):
        raise EncoderInputError(f"expected a file path or bytes, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise EncoderInputError("file not found")
    if not path.is_file():
        raise EncoderInputError("not a regular file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EncoderInputError(f"cannot read file: {exc.strerror or exc}") from exc


def decode_image(source: Any, draft_size: int | None = None) -> Any:
    """An RGB `PIL.Image` from a path, bytes, a PIL image or an HxW[xC] uint8 array.

    Pixels are fully decoded here (PIL is lazy), so a truncated file fails now, not in the model.
    `draft_size` lets JPEG decode at a reduced scale no smaller than that size (much faster for
    photos from cameras; the model sees 224 px anyway).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise EncoderInputError(f"image arrays must be uint8 HxW or HxWxC, got {source.dtype} {source.shape}")
        image = Image.fromarray(source)
    else:
        data = read_source_bytes(source)
        if not data:
            raise EncoderInputError("empty image file")
        try:
            image = Image.open(io.BytesIO(data))
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise EncoderInputError(f"cannot decode image: {exc}") from exc
        except Exception as exc:  # noqa: BLE001  (malformed files trip decoder internals: struct.error, EOFError, ...)
            raise EncoderInputError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    if image.width < 1 or image.height < 1:
        raise EncoderInputError(f"image has no pixels ({image.width}x{image.height})")
    if image.mode != "RGB":
        # Transparent pixels become white rather than whatever colour sits under alpha=0.
        if image.mode in ("RGBA", "LA", "P", "PA"):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        image = image.convert("RGB")
    return image


def decode_audio(source: Any, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 waveform at `sample_rate` from a path, bytes or a ``(samples, sr)`` tuple.

    Only the first `max_seconds` are decoded. Files libsndfile reads (WAV, FLAC, OGG, MP3, AIFF,
    ...) are supported; anything else is reported as undecodable.
    """
    import soundfile as sf

    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], np.ndarray):
        samples, sr = np.asarray(source[0], dtype=np.float32), int(source[1])
        if samples.ndim == 2:
            samples = samples.mean(axis=1 if samples.shape[1] <= 8 else 0)
        if max_seconds:
            samples = samples[: int(max_seconds * sr)]
    else:
        data = read_source_bytes(source)
        if not data:
            raise EncoderInputError("empty audio file")
        try:
            with sf.SoundFile(io.BytesIO(data)) as f:
                sr = f.samplerate
                limit = int(max_seconds * sr) if max_seconds else -1  # read() stops early at end of file
                samples = f.read(frames=limit, dtype="float32", always_2d=True).mean(axis=1)
        except Exception as exc:  # noqa: BLE001  (libsndfile errors, or decoder internals on malformed files)
            raise EncoderInputError(f"cannot decode audio: {exc}") from exc
    if samples.size == 0:
        raise EncoderInputError("audio has no samples")
    if not np.isfinite(samples).all():
        raise EncoderInputError("audio contains NaN or infinite samples")
    if sr != sample_rate:
        import librosa

        samples = librosa.resample(samples, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(samples, dtype=np.float32)


def tile_to_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Repeat a short clip until it is `length` long.

    Tiling (not zero padding) keeps a short sound's statistics instead of diluting them with
    silence, so a 0.5 s beep and a 5 s beep of the same tone embed alike.
    """
    if samples.shape[0] >= length:
        return samples
    return np.pad(samples, (0, length - samples.shape[0]), mode="wrap")


def fixed_windows(samples: np.ndarray, window: int) -> np.ndarray:
    """Cut a waveform into windows of exactly `window` samples, (n_windows, window).

    Short clips are tiled up to one window; a trailing remainder shorter than half a window is
    dropped (it would be mostly padding), a longer one is tiled to a full window.
    """
    samples = tile_to_length(samples, window)
    n_full, rest = divmod(samples.shape[0], window)
    windows = [samples[i * window:(i + 1) * window] for i in range(n_full)]
    if rest >= window // 2:
        windows.append(tile_to_length(samples[n_full * window:], window))
    return np.stack(windows)
