"""Default learned audio encoder: the aisfx sound-effects CNN (ISMIR 2022, 512-d), weights packaged.

We reuse aisfx's model classes, weights file and constants, but not its pipeline, because with
today's torch/librosa it breaks in three places, all patched here rather than in site-packages:

* `torch.load` now defaults to ``weights_only=True`` and the checkpoint pickles numpy scalars:
  we allow exactly those globals instead of falling back to unsafe unpickling.
* its librosa spectrogram returns (mels, frames) while the model and `blocking` expect
  (frames, mels): we transpose.
* `compute_hopSize` asserts on clips shorter than one hop (~1.2 s): we tile short clips to one
  block (see `media_io.tile_to_length`) and block the spectrogram ourselves.

Pipeline: 44.1 kHz mono, peak-normalised; 96-band HTK log-mel (2048/1024), scaled with the
paper's min/max; blocks of 100 frames (~2.3 s) with 50 % overlap; CNN embedding per block;
mean over blocks (long files are chunked and pooled) and L2 normalisation.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.encoders.base import ContentEncoder, EncoderWeightsError, check_output, l2_normalize, slug, weights_fingerprint
from recsys.encoders.media_io import decode_audio, tile_to_length
from recsys.encoders.specs import AudioSpec

log = logging.getLogger(__name__)

PREPROCESS_REV = 1  # bump when the spectrogram, blocking or pooling changes
SAMPLE_RATE = 44100
N_FFT, HOP, N_MELS = 2048, 1024, 96
BLOCK_FRAMES, BLOCK_HOP = 100, 50
SPEC_MAX = 9.457798957824707  # aisfx 'original' normalisation (min 0, max over the paper's datasets)
EMBED_DIM = 512


def load_aisfx_model(checkpoint: str | Path | None, device: str = "cpu") -> Any:
    """The aisfx EmbeddingNet with its trained weights (classifier heads are dropped)."""
    import numpy.dtypes
    import torch
    from aisfx.inference import get_path_modelWeights
    from aisfx.models.cnn2d import EmbeddingNet
    from numpy._core.multiarray import scalar

    path = Path(checkpoint) if checkpoint else Path(get_path_modelWeights())
    if not path.is_file():
        raise EncoderWeightsError(f"aisfx checkpoint {path} does not exist")
    # The checkpoint is (state_dict, {dataset: (np.int64 index, n_classes)}): allow only numpy scalars.
    allowed = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, numpy.dtypes.Int64DType]
    with torch.serialization.safe_globals(allowed):
        weights, _ = torch.load(path, map_location=device, weights_only=True)
    prefix = "embedding_net."
    state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    net = EmbeddingNet("max", 3, 1, 64)  # the paper's best configuration, as in aisfx.load_bestModel
    net.load_state_dict(state)
    return net.to(device).eval(), path


def log_mel_blocks(samples: np.ndarray) -> np.ndarray:
    """(n_blocks, BLOCK_FRAMES, N_MELS) float32 model input for one 44.1 kHz waveform."""
    import librosa

    samples = tile_to_length(samples, N_FFT + HOP * (BLOCK_FRAMES - 1))  # at least one full block
    peak = float(np.max(np.abs(samples)))
    samples = samples / (peak if peak > 0 else 1.0)
    mel = librosa.feature.melspectrogram(y=samples, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT,
                                         n_mels=N_MELS, fmin=0.0, fmax=SAMPLE_RATE / 2, htk=True, norm=1.0, power=2.0)
    spec = (np.log10(mel * 10000.0 + 1.0) / SPEC_MAX).T.astype(np.float32)  # (frames, mels)
    n_blocks = max(1, 1 + (spec.shape[0] - BLOCK_FRAMES) // BLOCK_HOP)
    return np.stack([spec[i * BLOCK_HOP:i * BLOCK_HOP + BLOCK_FRAMES] for i in range(n_blocks)])


class AisfxAudioEncoder(ContentEncoder):
    """Embeds audio with the packaged aisfx CNN (512-d).

    Accepts a path, raw bytes (an upload) or a ``(samples, sample_rate)`` tuple.

    Args:
        spec: duration cap, checkpoint, blocks per forward pass; see `AudioSpec`.

    Example::

        AisfxAudioEncoder(AudioSpec()).encode_one(wav_bytes)  # (512,)
    """

    medium = "audio"

    def __init__(self, spec: AudioSpec = AudioSpec()) -> None:
        import aisfx  # noqa: F401  (fails early with a clear ImportError when the package is absent)

        self.spec = spec
        self.model, path = load_aisfx_model(spec.checkpoint, spec.device)
        self.dim = EMBED_DIM
        self.normalized = spec.normalize
        self.version = slug(f"audio-aisfx-{weights_fingerprint(path)}-sr{SAMPLE_RATE}-mel{N_MELS}"
                            f"-blk{BLOCK_FRAMES}h{BLOCK_HOP}-max{spec.max_seconds:g}s"
                            f"-{'l2' if spec.normalize else 'raw'}-p{PREPROCESS_REV}")
        log.info("audio encoder %s (dim %d)", self.version, self.dim)

    def prepare(self, source: Any) -> np.ndarray:
        """Decode, resample to 44.1 kHz and cut into log-mel blocks: (n_blocks, 100, 96)."""
        return log_mel_blocks(decode_audio(source, SAMPLE_RATE, self.spec.max_seconds))

    def encode_prepared(self, items: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        blocks = np.concatenate(list(items))
        outputs = []
        with torch.inference_mode():
            for start in range(0, blocks.shape[0], self.spec.batch_blocks):
                chunk = torch.from_numpy(blocks[start:start + self.spec.batch_blocks]).to(self.spec.device)
                outputs.append(self.model(chunk).float().cpu().numpy())
        per_block = np.concatenate(outputs)
        bounds = np.cumsum([0] + [len(x) for x in items])
        vectors = np.stack([per_block[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
        if self.spec.normalize:
            vectors = l2_normalize(vectors)
        return check_output(vectors, len(items), self.dim, self.version)
