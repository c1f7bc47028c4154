"""`pred` with a per-pixel error tolerance: near-lossless where allowed, exact elsewhere.

The same model as the lossless `pred` codec, with the residual of each tolerant pixel quantised
in the loop (step 2t + 1, so the rebuilt value is within t of the original) and the two-value
mode accepting a neighbour's value when it lies within t. Pixels with tolerance 0 are coded
exactly, in probability rows of their own. The decoder must be given the same tolerance map;
the ROI-hybrid format stores it (its mask) beside this payload.

Payload: the predictor's class thresholds (u4 each, 0xFFFFFFFF for none) and weights (i2),
then the range-coded pixels; docs/roi-hybrid.md, layout PRED.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..base import CodecError, CorruptBitstream
from . import _kernel as k
from .codec import _NO_DUMP, _NO_THRESHOLD, _run, default_predictor, fit_predictor

__all__ = ["MAX_TOLERANCE", "decode_within", "encode_within"]

MAX_TOLERANCE = 255  # tolerances travel as bytes
_THRESHOLDS = k.N_GCLS - 1 + k.N_INT - 1
_TABLE_BYTES = 4 * _THRESHOLDS + 2 * k.N_CLS * k.N_LS
_FIT_ROW_STEP = 8  # sizes within 0.1 % of a fit on every row, at a fraction of its time


def encode_within(values: npt.NDArray[np.integer], maxval: int,
                  tolerance: npt.NDArray[np.uint8]) -> tuple[bytes, npt.NDArray[np.int32]]:
    """The payload for `values` (rows, columns) in 0..maxval, each within its `tolerance`, and
    the frame the decoder will rebuild from it."""
    image = np.ascontiguousarray(values, dtype=np.int32)
    tolerance = _checked_tolerance(tolerance, image.shape)
    fitted = fit_predictor(image, row_step=_FIT_ROW_STEP) if image.size >= 4096 else None
    weights, thresholds = fitted if fitted is not None else default_predictor()
    table = (np.minimum(thresholds, _NO_THRESHOLD).astype("<u4").tobytes() + weights.astype("<i2").tobytes())
    rebuilt = image.copy()  # the kernel writes the rebuilt values over the tolerant pixels
    for capacity in (4 * image.size + 1024, 24 * image.size + 1024):
        buf = np.empty(capacity, dtype=np.uint8)
        status, length = _run(rebuilt, True, maxval, weights, thresholds, None, buf, 0, _NO_DUMP,
                              tolerance.ravel())
        if status == k.STATUS_OK:
            return table + buf[:length].tobytes(), rebuilt
        if status != k.STATUS_OVERFLOW:
            break
        rebuilt = image.copy()
    raise CodecError(f"pred near-lossless encoder failed with status {status}")


def decode_within(payload: bytes, rows: int, columns: int, maxval: int,
                  tolerance: npt.NDArray[np.uint8]) -> npt.NDArray[np.int32]:
    """The frame `encode_within` rebuilt; CorruptBitstream if the payload cannot be it."""
    tolerance = _checked_tolerance(tolerance, (rows, columns))
    if len(payload) < _TABLE_BYTES:
        raise CorruptBitstream("pred near-lossless payload is shorter than its predictor tables")
    view = memoryview(payload)
    thresholds = np.frombuffer(view[:4 * _THRESHOLDS], dtype="<u4").astype(np.int64)
    thresholds[thresholds == _NO_THRESHOLD] = 1 << 40
    weights = np.frombuffer(view[4 * _THRESHOLDS:_TABLE_BYTES], dtype="<i2").astype(np.int64)
    weights = weights.reshape(k.N_CLS, k.N_LS)
    buf = np.frombuffer(view[_TABLE_BYTES:], dtype=np.uint8).copy()
    image = np.zeros((rows, columns), dtype=np.int32)
    status, _ = _run(image, False, maxval, weights, thresholds, None, buf, len(buf), _NO_DUMP, tolerance.ravel())
    if status != k.STATUS_OK:
        raise CorruptBitstream("pred near-lossless data decodes to values outside the stored range")
    return image


def _checked_tolerance(tolerance: npt.NDArray[np.uint8], shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    tolerance = np.ascontiguousarray(tolerance)
    if tolerance.dtype != np.uint8 or tolerance.shape != shape:
        raise ValueError(f"tolerance must be uint8 of shape {shape}, not {tolerance.dtype}{tolerance.shape}")
    return tolerance
