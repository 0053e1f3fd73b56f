"""Image encoder: the image tower of an open_clip model at 224 px.

No package ships CLIP weights, so the weights source is always an explicit choice:
a local checkpoint file, a pretrained tag (may download: only when the user asks for it), or
seeded random weights, which are flagged in `version` ("random") and logged as a warning so that
vectors from an untrained tower never pass for real ones.
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

PREPROCESS_REV = 1  # bump when decoding/resizing changes what the tower sees


def weights_source(spec: ImageSpec) -> tuple[str | None, str]:
    """(value for open_clip's `pretrained`, version tag); refuses an implicit choice."""
    chosen = [name for name, on in (("checkpoint", spec.checkpoint), ("pretrained", spec.pretrained),
                                    ("allow_random_weights", spec.allow_random_weights)) if on]
    if len(chosen) > 1:
        raise EncoderWeightsError(f"choose one image weights source, got {chosen}")
    if spec.checkpoint:
        path = Path(spec.checkpoint).expanduser().resolve()
        if not path.is_file():
            raise EncoderWeightsError(f"image checkpoint {path} does not exist")
        return str(path), f"ckpt{weights_fingerprint(path)}"
    if spec.pretrained:
        return spec.pretrained, f"tag-{spec.pretrained}"
    if spec.allow_random_weights:
        return None, f"random-seed{spec.seed}"
    raise EncoderWeightsError(
        "no image weights: give a local checkpoint (--image-checkpoint PATH / ImageSpec(checkpoint=...)), "
        "a pretrained tag for a machine with a network (--image-pretrained TAG), or ask for random weights "
        "explicitly (--image-random-weights / ImageSpec(allow_random_weights=True))")


class OpenClipImageEncoder(ContentEncoder):
    """Embeds images with an open_clip image tower.

    Accepts a path (str/PathLike), raw bytes (e.g. an upload), a `PIL.Image` or a uint8 array.

    Args:
        spec: architecture, weights source and input size; see `ImageSpec`.

    Example::

        OpenClipImageEncoder(ImageSpec(checkpoint="clip-vit-b-32.pt")).encode_one(png_bytes)  # (512,)
    """

    medium = "image"

    def __init__(self, spec: ImageSpec) -> None:
        import open_clip
        import torch

        self.spec = spec
        pretrained, weights_tag = weights_source(spec)
        if spec.arch.startswith(("hf-hub:", "local-dir:")):
            raise EncoderWeightsError("give a built-in open_clip architecture name plus a checkpoint or tag, "
                                      f"not a schema name ({spec.arch!r})")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)  # random weights are reproducible, so their cache stays valid
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    spec.arch, pretrained=pretrained, device=spec.device, pretrained_text=False,
                    force_image_size=spec.image_size)
            except RuntimeError as exc:
                raise EncoderWeightsError(f"cannot build open_clip {spec.arch} with weights {weights_tag}: {exc}") from exc
        self.model = model.eval()
        self.preprocess = preprocess
        with torch.inference_mode():
            probe = self.model.encode_image(torch.zeros(1, 3, spec.image_size, spec.image_size, device=spec.device))
        self.dim = int(probe.shape[-1])
        self.normalized = spec.normalize
        self.random_weights = pretrained is None
        self.version = slug(f"image-openclip-{spec.arch}-{weights_tag}-{spec.image_size}px"
                            f"-{'l2' if spec.normalize else 'raw'}-p{PREPROCESS_REV}")
        if self.random_weights:
            log.warning("image encoder uses RANDOM weights (seed %d): vectors carry no visual meaning; "
                        "version %s is flagged", spec.seed, self.version)
        else:
            log.info("image encoder %s (dim %d)", self.version, self.dim)

    def prepare(self, source: Any) -> Any:
        """Decode (RGB, alpha over white) and apply the model's resize/crop/normalise: (3, S, S) tensor."""
        image = decode_image(source, draft_size=2 * self.spec.image_size)
        return self.preprocess(image)

    def encode_prepared(self, items: Sequence[Any]) -> np.ndarray:
        import torch

        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            batch = torch.stack(list(items)).to(self.spec.device)
            vectors = self.model.encode_image(batch).float().cpu().numpy()
        if self.spec.normalize:
            vectors = l2_normalize(vectors)
        return check_output(vectors, len(items), self.dim, self.version)
