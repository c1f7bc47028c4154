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

from ..base import CodecError, CorruptBitstream
from . import _kernel as k
from .codec import (
    _NO_DUMP,
    _NO_THRESHOLD,
    _TRY_FIXED_BELOW,
    _TRY_SINGLE_BELOW,
    _run,
    default_predictor,
    fit_predictor,
)

__all__ = ["MAX_TOLERANCE", "decode_within", "encode_within"]

MAX_TOLERANCE = 255  # tolerances travel as bytes
_THRESHOLDS = k.N_GCLS - 1 + k.N_INT - 1
# The first payload byte: which predictor follows. Small frames often code smaller with one
# weight set (46 bytes) or none than with the per-class tables (380 bytes), as in lossless pred.
_FIXED, _SINGLE, _TABLES = 0, 1, 2
_PREDICTOR_BYTES = {_FIXED: 0, _SINGLE: 2 * k.N_LS, _TABLES: 4 * _THRESHOLDS + 2 * k.N_CLS * k.N_LS}
_FIT_ROW_STEP = 8  # sizes within 0.1 % of a fit on every row, at a fraction of its time


def encode_within(values: npt.NDArray[np.integer], maxval: int,
                  tolerance: npt.NDArray[np.uint8]) -> tuple[bytes, npt.NDArray[np.int32]]:
    """The payload for `values` (rows, columns) in 0..maxval, each within its `tolerance`, and
    the frame the decoder will rebuild from it."""
    image = np.ascontiguousarray(values, dtype=np.int32)
    tolerance = _checked_tolerance(tolerance, image.shape)
    best: tuple[bytes, npt.NDArray[np.int32]] | None = None
    for kind, weights, thresholds in _predictors(image):
        coded, rebuilt = _encode(image, maxval, weights, thresholds, tolerance)
        payload = bytes([kind]) + _predictor_bytes(kind, weights, thresholds) + coded
        if best is None or len(payload) < len(best[0]):
            best = payload, rebuilt
    assert best is not None
    return best


def _predictors(image: npt.NDArray[np.int32]) -> list[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """The predictors worth a trial for a frame of this size (those of lossless pred)."""
    options = []
    if image.size < _TRY_SINGLE_BELOW:
        fitted = fit_predictor(image, classes=False)
        if fitted is not None:
            options.append((_SINGLE, *fitted))
    if image.size >= _TRY_FIXED_BELOW:
        row_step = _FIT_ROW_STEP if image.size >= _TRY_SINGLE_BELOW else 1
        fitted = fit_predictor(image, row_step=row_step)
        if fitted is not None:
            options.append((_TABLES, *fitted))
    if not options or image.size < _TRY_FIXED_BELOW:
        options.append((_FIXED, *default_predictor()))
    return options


def _predictor_bytes(kind: int, weights: npt.NDArray[np.int64], thresholds: npt.NDArray[np.int64]) -> bytes:
    if kind == _SINGLE:
        return bytes(weights[0].astype("<i2").tobytes())
    if kind == _TABLES:
        return np.minimum(thresholds, _NO_THRESHOLD).astype("<u4").tobytes() + weights.astype("<i2").tobytes()
    return b""


def _encode(image: npt.NDArray[np.int32], maxval: int, weights: npt.NDArray[np.int64],
            thresholds: npt.NDArray[np.int64], tolerance: npt.NDArray[np.uint8]) -> tuple[bytes, npt.NDArray[np.int32]]:
    for capacity in (4 * image.size + 1024, 24 * image.size + 1024):
        rebuilt = image.copy()  # the kernel writes the rebuilt values over the tolerant pixels
        buf = np.empty(capacity, dtype=np.uint8)
        status, length = _run(rebuilt, True, maxval, weights, thresholds, None, buf, 0, _NO_DUMP,
                              tolerance.ravel())
        if status == k.STATUS_OK:
            return buf[:length].tobytes(), rebuilt
        if status != k.STATUS_OVERFLOW:
            break
    raise CodecError(f"pred near-lossless encoder failed with status {status}")


def decode_within(payload: bytes, rows: int, columns: int, maxval: int,
                  tolerance: npt.NDArray[np.uint8]) -> npt.NDArray[np.int32]:
    """The frame `encode_within` rebuilt; CorruptBitstream if the payload cannot be it."""
    tolerance = _checked_tolerance(tolerance, (rows, columns))
    view = memoryview(payload)
    if not len(view) or view[0] not in _PREDICTOR_BYTES:
        raise CorruptBitstream("pred near-lossless payload names no known predictor")
    kind, end = view[0], 1 + _PREDICTOR_BYTES[view[0]]
    if len(view) < end:
        raise CorruptBitstream("pred near-lossless payload is shorter than its predictor")
    weights, thresholds = default_predictor()
    if kind == _SINGLE:
        weights[:] = np.frombuffer(view[1:end], dtype="<i2").astype(np.int64)
    elif kind == _TABLES:
        thresholds = np.frombuffer(view[1:1 + 4 * _THRESHOLDS], dtype="<u4").astype(np.int64)
        thresholds[thresholds == _NO_THRESHOLD] = 1 << 40
        weights = np.frombuffer(view[1 + 4 * _THRESHOLDS:end], dtype="<i2").astype(np.int64).reshape(k.N_CLS, k.N_LS)
    buf = np.frombuffer(view[end:], dtype=np.uint8).copy()
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
