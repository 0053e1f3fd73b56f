"""Content encoders: text, image, audio and precomputed vectors behind one `ContentEncoder` interface.

Heavy libraries (torch, open_clip, sentence-transformers, librosa) load only when an encoder is
built, so importing this package is cheap.
"""
from recsys.encoders.base import ContentEncoder, EncoderInputError, EncoderWeightsError, l2_normalize
from recsys.encoders.factory import build_encoder, default_spec, encoders_for_item_vectors
from recsys.encoders.specs import AudioSpec, EncoderSpec, ImageSpec, PrecomputedSpec, TextSpec, spec_from_dict, spec_to_dict

__all__ = [
    "AudioSpec", "ContentEncoder", "EncoderInputError", "EncoderSpec", "EncoderWeightsError", "ImageSpec",
    "PrecomputedSpec", "TextSpec", "build_encoder", "default_spec", "encoders_for_item_vectors", "l2_normalize",
    "spec_from_dict", "spec_to_dict",
]
