"""`pred`: our own lossless format for greyscale frames (no DICOM transfer syntax).

Per-image least-squares prediction in integer arithmetic, context-adaptive binary range coding,
optionally with a learned context model; its bitstream is in docs/pred-bitstream.md.
"""

from .codec import PRED_BITSTREAM_VERSION, PredCodec
from .model import ContextModel, load_model, shipped_models

__all__ = ["PRED_BITSTREAM_VERSION", "ContextModel", "PredCodec", "load_model", "shipped_models"]
