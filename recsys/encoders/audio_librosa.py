"""Audio encoder that always works: handcrafted librosa statistics (85-d).

No weights, no torch: timbre (MFCC), harmony (chroma), texture (spectral contrast, centroid,
zero-crossing rate), loudness (RMS) summarised by mean and standard deviation over frames, plus
tempo. The signal is resampled to 22.05 kHz and cut into fixed windows; each window is
summarised and the summaries are averaged, so a long file costs time linear in its length
(up to `max_seconds`) and a short one is tiled to one window.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys.encoders.base import ContentEncoder, check_output, l2_normalize, slug
from recsys.encoders.media_io import decode_audio, fixed_windows
from recsys.encoders.specs import AudioSpec

log = logging.getLogger(__name__)

PREPROCESS_REV = 1  # bump when the feature list, scaling or windowing changes
SAMPLE_RATE = 22050
N_MFCC = 20
FEATURE_DIM = 2 * N_MFCC + 2 * 12 + 2 * 7 + 2 + 2 + 2 + 1  # mfcc, chroma, contrast, rms, zcr, centroid, tempo


def window_statistics(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Feature vector of one window (FEATURE_DIM,), before scaling."""
    import librosa

    stft = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    power = stft ** 2
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr))
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, tuning=0.0)  # no pitch-tuning estimate: stable, faster
    contrast = librosa.feature.spectral_contrast(S=stft, sr=sr)
    rms = librosa.feature.rms(S=stft)
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)
    centroid = librosa.feature.spectral_centroid(S=stft, sr=sr) / (sr / 2)  # fraction of Nyquist
    onset = librosa.onset.onset_strength(S=mel_db, sr=sr)
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sr)[:1] / 240.0  # ~[0, 1] for music tempi
    parts = [np.concatenate([f.mean(axis=1), f.std(axis=1)]) for f in (mfcc, chroma, contrast, rms, zcr, centroid)]
    return np.concatenate([*parts, tempo]).astype(np.float32)


def scale_features(raw: np.ndarray) -> np.ndarray:
    """Signed log compression: MFCC0 (~ -500) and chroma (~0.3) land on comparable scales, so no
    single statistic dominates a cosine similarity."""
    return np.sign(raw) * np.log1p(np.abs(raw))


class LibrosaAudioEncoder(ContentEncoder):
    """Embeds audio as pooled librosa statistics.

    Accepts a path, raw bytes (an upload) or a ``(samples, sample_rate)`` tuple.

    Args:
        spec: window length, duration cap, normalisation; see `AudioSpec`.

    Example::

        LibrosaAudioEncoder(AudioSpec(encoder="librosa")).encode_one(wav_bytes)  # (85,)
    """

    medium = "audio"

    def __init__(self, spec: AudioSpec = AudioSpec(encoder="librosa")) -> None:
        import librosa

        self.spec = spec
        self.dim = FEATURE_DIM
        self.normalized = spec.normalize
        self.window = int(round(spec.window_seconds * SAMPLE_RATE))
        self.version = slug(f"audio-librosa{librosa.__version__}-sr{SAMPLE_RATE}-win{spec.window_seconds:g}s"
                            f"-max{spec.max_seconds:g}s-d{FEATURE_DIM}-{'l2' if spec.normalize else 'raw'}-p{PREPROCESS_REV}")

    def prepare(self, source: Any) -> np.ndarray:
        """Decode, resample, window and summarise: the (FEATURE_DIM,) vector (all the work is per item)."""
        samples = decode_audio(source, SAMPLE_RATE, self.spec.max_seconds)
        windows = fixed_windows(samples, self.window)
        return scale_features(np.mean([window_statistics(w) for w in windows], axis=0))

    def encode_prepared(self, items: Sequence[np.ndarray]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.stack(items).astype(np.float32)
        if self.spec.normalize:
            vectors = l2_normalize(vectors)
        return check_output(vectors, len(items), self.dim, self.version)
