"""`pred` with a per-pixel error tolerance: near-lossless where allowed, exact elsewhere.

The same model as the lossless `pred` codec, with the residual of each tolerant pixel quantised
in the loop (step 2t + 1, so the rebuilt value is within t of the original) and the two-value
mode accepting a neighbour's value when it lies within t. Pixels with tolerance 0 are coded
exactly, in probability rows of their own. The decoder must be given the same tolerance map;
the ROI-hybrid format stores it (its mask) beside this payload.

Payload: one byte naming the predictor (fixed, one weight set, or per-class tables), its
thresholds and weights, then the range-coded pixels; docs/roi-hybrid.md, layout PRED.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..base import CorruptBitstream
from .codec import Predictor, decode_pixels, encode_pixels, predictor_bytes, predictor_options, read_predictor

__all__ = ["MAX_TOLERANCE", "decode_within", "encode_within"]

MAX_TOLERANCE = 255  # tolerances travel as bytes
_FIT_ROW_STEP = 8  # sizes within 0.1 % of a fit on every row, at a fraction of its time


def encode_within(values: npt.NDArray[np.integer], maxval: int,
                  tolerance: npt.NDArray[np.uint8]) -> tuple[bytes, npt.NDArray[np.int32]]:
    """The payload for `values` (rows, columns) in 0..maxval, each within its `tolerance`, and
    the frame the decoder will rebuild from it."""
    image = np.ascontiguousarray(values, dtype=np.int32)
    tolerance = _checked_tolerance(tolerance, image.shape)
    best: tuple[bytes, npt.NDArray[np.int32]] | None = None
    for kind, weights, thresholds in predictor_options(image, row_step=_FIT_ROW_STEP):
        coded, rebuilt = encode_pixels(image, maxval, weights, thresholds, None, tolerance)
        payload = bytes([kind]) + predictor_bytes(kind, weights, thresholds) + coded
        if best is None or len(payload) < len(best[0]):
            best = payload, rebuilt
    assert best is not None  # predictor_options always offers one
    return best


def decode_within(payload: bytes, rows: int, columns: int, maxval: int,
                  tolerance: npt.NDArray[np.uint8]) -> npt.NDArray[np.int32]:
    """The frame `encode_within` rebuilt; CorruptBitstream if the payload cannot be it."""
    tolerance = _checked_tolerance(tolerance, (rows, columns))
    view = memoryview(payload)
    if not len(view) or view[0] not in set(Predictor):
        raise CorruptBitstream("pred near-lossless payload names no known predictor")
    weights, thresholds, end = read_predictor(view, 1, Predictor(view[0]))
    return decode_pixels(view[end:], (rows, columns), maxval, weights, thresholds, None, tolerance)


def _checked_tolerance(tolerance: npt.NDArray[np.uint8], shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    tolerance = np.ascontiguousarray(tolerance)
    if tolerance.dtype != np.uint8 or tolerance.shape != shape:
        raise ValueError(f"tolerance must be uint8 of shape {shape}, not {tolerance.dtype}{tolerance.shape}")
    return tolerance
