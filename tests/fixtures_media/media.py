"""Writers for real test media and shared, once-per-process encoders.

Images are the photographs that ship with scikit-image (astronaut, coffee, chelsea, camera),
saved as PNG/JPEG; audio is synthesised with numpy (tones, noise, chirps) and written with
soundfile; corrupt files are planted on purpose (truncated PNG, garbage .wav, empty file).
Encoders are memoised so the text model and the CLIP tower load once per test session.
"""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np

SR = 22050


def set_threads() -> None:
    """The test machines have 2 cores shared with other jobs: one torch thread avoids OpenMP
    spin-waiting under oversubscription (measured 2x faster than two threads at load ~8)."""
    import torch

    torch.set_num_threads(1)


def image_array(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


def image_bytes(name: str, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image_array(name)).save(buffer, format=fmt)
    return buffer.getvalue()


def write_images(folder: Path) -> dict[str, Path]:
    """astronaut.png, coffee.jpg, chelsea.png, camera.png (grayscale) and an RGBA png."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    files = {"astronaut": ("astronaut", "PNG", "astronaut.png"), "coffee": ("coffee", "JPEG", "coffee.jpg"),
             "chelsea": ("chelsea", "PNG", "chelsea.png"), "camera": ("camera", "PNG", "camera.png")}
    out = {}
    for key, (name, fmt, filename) in files.items():
        (folder / filename).write_bytes(image_bytes(name, fmt))
        out[key] = folder / filename
    rgba = Image.fromarray(image_array("chelsea")).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "chelsea_rgba.png")
    out["chelsea_rgba"] = folder / "chelsea_rgba.png"
    return out


def tone(freq: float, seconds: float, sr: int = SR, amplitude: float = 0.4) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.2, int(seconds * sr)).astype(np.float32)


def chirp(seconds: float, sr: int = SR, f0: float = 200.0, f1: float = 4000.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds))
    return (0.4 * np.sin(phase)).astype(np.float32)


def wav_bytes(samples: np.ndarray, sr: int = SR, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format=fmt, subtype=subtype)
    return buffer.getvalue()


def write_audio(folder: Path) -> dict[str, Path]:
    """tone_a440 (3 s wav), tone_a440_short (0.4 s), tone_a440_16k (3 s at 16 kHz), tone_low (110 Hz flac),
    noise (2 s wav), chirp (7 s ogg: longer than one window, so it is chunked)."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = {
        "tone_a440.wav": (tone(440, 3.0), SR, "WAV"),
        "tone_a440_short.wav": (tone(440, 0.4, amplitude=0.2), SR, "WAV"),
        "tone_a440_16k.wav": (tone(440, 3.0, sr=16000), 16000, "WAV"),
        "tone_low.flac": (tone(110, 3.0), SR, "FLAC"),
        "noise.wav": (noise(2.0), SR, "WAV"),
        "chirp.ogg": (chirp(7.0), SR, "OGG"),
    }
    out = {}
    for filename, (samples, sr, fmt) in clips.items():
        (folder / filename).write_bytes(wav_bytes(samples, sr, fmt))
        out[filename.rsplit(".", 1)[0]] = folder / filename
    return out


def plant_corrupt(folder: Path) -> dict[str, Path]:
    """truncated.png (first 40 % of a real PNG), garbage.wav (random bytes), empty.wav, and a
    path that does not exist."""
    folder.mkdir(parents=True, exist_ok=True)
    png = image_bytes("astronaut", "PNG")
    (folder / "truncated.png").write_bytes(png[: int(len(png) * 0.4)])
    (folder / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + np.random.default_rng(1).bytes(4000))
    (folder / "empty.wav").write_bytes(b"")
    return {"truncated_png": folder / "truncated.png", "garbage_wav": folder / "garbage.wav",
            "empty_wav": folder / "empty.wav", "missing": folder / "does_not_exist.png"}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@lru_cache(maxsize=None)
def shared_encoder(medium: str, kind: str = "default"):  # noqa: ANN201
    """Encoders built once per test process (MiniLM, random-weight ViT-B-32, aisfx, librosa)."""
    from recsys.encoders import AudioSpec, ImageSpec, build_encoder

    set_threads()
    if medium == "image":
        return build_encoder("image", ImageSpec(allow_random_weights=True))  # RANDOM weights: no CLIP ships offline
    if medium == "audio":
        return build_encoder("audio", AudioSpec(encoder=kind if kind != "default" else "aisfx"))
    return build_encoder(medium)


def speech_wav(text: str, words_per_minute: int = 160, voice: str = "en") -> bytes:
    """Real synthetic speech from espeak-ng (WAV bytes); needs the `espeak-ng` binary."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".wav") as out:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", out.name, text], check=True,
                       capture_output=True, timeout=60)
        return Path(out.name).read_bytes()
