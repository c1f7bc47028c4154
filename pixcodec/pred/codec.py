"""The `pred` codec: per-image least-squares prediction with context-adaptive binary coding.

Payload layout (docs/pred-bitstream.md): a fixed header, the predictor tables, the CRC-32 of
the pixels, the range-coded residuals. The encoder fits the predictor to the image and sends
it; the decoder reads it back and runs the same integer model.
"""

from __future__ import annotations

import enum
import struct
import zlib

import numpy as np
import numpy.typing as npt

from ..base import Capabilities, CodecError, CorruptBitstream, PixelSpec, UnsupportedPixelSpec
from ..standard.common import DICOM_MAX_DIMENSION, require_coding_spec
from . import _kernel as k
from .model import ContextModel, shipped_models

__all__ = ["PRED_BITSTREAM_VERSION", "PredCodec", "Predictor", "WrongReference", "decode_pixels", "encode_pixels",
           "predictor_bytes", "predictor_options", "read_predictor"]

# Version 2 is version 1 plus frames coded against a reference frame (FLAG_REFERENCE); every
# version-1 payload reads as before, through a codec instance of version 1.
PRED_BITSTREAM_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAGIC = b"PRD"
FLAG_TABLES = 1  # predictor tables follow; otherwise the fixed (W + N) / 2 predictor
FLAG_MODEL = 2  # the learned context model named by the digest that follows ran
FLAG_PACKED = 4  # pixels are coded as ranks among the values the frame uses; the set follows
FLAG_SINGLE = 8  # with FLAG_TABLES: one weight set for every class, and no thresholds
FLAG_REFERENCE = 16  # version 2: predicted from a reference frame as well, whose CRC-32 follows
_FLAGS = {1: FLAG_TABLES | FLAG_MODEL | FLAG_PACKED | FLAG_SINGLE,
          2: FLAG_TABLES | FLAG_MODEL | FLAG_PACKED | FLAG_SINGLE | FLAG_REFERENCE}

# magic, version, flags, rows, columns, bits stored, taps, gradient classes, orientation classes
_HEAD = struct.Struct("<3sBBIIBBBB")
_TAIL = struct.Struct("<II")  # CRC-32 of the pixels (little-endian words), coded length
_PACKING = struct.Struct("<III")  # lowest value, span of the bitmap, length of its deflated form
_REFERENCE = struct.Struct("<I")  # CRC-32 of the reference frame, as the pixel CRC
_NO_THRESHOLD = 0xFFFFFFFF
# Below this many pixels the class tables (380 bytes) may cost more than they save: the
# encoder then also tries one weight set (46 bytes), and below the second limit no table at all,
# and keeps the smallest result.
_TRY_SINGLE_BELOW = 65536
_TRY_FIXED_BELOW = 4096
# Per class, the fit uses at most this many samples: plenty for 23 weights, in bounded time.
_MAX_FIT_SAMPLES = 20_000
# Frames large enough for class tables are fitted on every other row: the fit takes about half
# as long and the frames come out 0.01-0.03 % larger (corpus CT, MR, CR, MG, PT).
_FIT_ROW_STEP = 2
# Intensity classes of the coding contexts split at these quantiles of the pixel values (the
# most common value, padding as a rule, left out): fine at the low end, where CT air and MR
# background noise differ most from tissue.
_INTENSITY_QUANTILES = (0.02, 0.1, 0.3)


class Predictor(enum.IntEnum):
    """Which least-squares predictor a payload carries. Lossless payloads name it with header
    flags, near-lossless ones (pred.near) with this value in a byte: both are part of a format."""

    FIXED = 0  # (W + N) / 2 in every class: no parameters
    SINGLE = 1  # one weight set for every class, no thresholds
    TABLES = 2  # per-class weights and the class thresholds


_THRESHOLD_COUNT = k.N_GCLS - 1 + k.N_INT - 1
_LOSSLESS_FLAGS = {Predictor.FIXED: 0, Predictor.SINGLE: FLAG_TABLES | FLAG_SINGLE, Predictor.TABLES: FLAG_TABLES}


class WrongReference(CodecError):
    """A payload coded against a reference frame was given none, or another one."""


def _predictor_bytes(kind: Predictor, taps: int) -> int:
    return {Predictor.FIXED: 0, Predictor.SINGLE: 2 * taps,
            Predictor.TABLES: 4 * _THRESHOLD_COUNT + 2 * k.N_CLS * taps}[kind]


class PredCodec:
    """Lossless coding of one-sample frames of up to 16 bits, with no DICOM transfer syntax.

    `model` is the learned context model to encode with (None: the hand-designed context
    formula); decoding takes whichever the payload names, so one instance reads both. An
    instance of `bitstream_version` 1 writes and reads version-1 payloads only (blobs written
    before version 2); one of version 2 can also code a frame against a reference frame, the
    previous slice of a series (see `encode`).
    """

    codec_id: str = "pred"
    transfer_syntax_uid: str | None = None

    def __init__(self, model: ContextModel | None = None, decoder_models: tuple[ContextModel, ...] = (),
                 bitstream_version: int = PRED_BITSTREAM_VERSION) -> None:
        if bitstream_version not in READABLE_VERSIONS:
            raise ValueError(f"pred has no bitstream version {bitstream_version}")
        self.bitstream_version = bitstream_version
        self.capabilities = Capabilities(lossless=True, samples_per_pixel=frozenset({1}),
                                         bits_allocated=frozenset({8, 16}), max_dimension=DICOM_MAX_DIMENSION,
                                         reference_frames=bitstream_version >= 2)
        self.model = model
        known = {m.digest: m for m in decoder_models}
        if model is not None:
            known[model.digest] = model
        self._models = known

    @classmethod
    def default(cls, bitstream_version: int = PRED_BITSTREAM_VERSION) -> PredCodec:
        """The registered instance: encodes with the hand-designed context formula and decodes
        payloads written with any context model shipped in the package."""
        return cls(None, shipped_models(), bitstream_version)

    def __repr__(self) -> str:
        return f"PredCodec(model={self.model.name if self.model is not None else None}, version={self.bitstream_version})"

    def encode(self, frame: npt.NDArray[np.unsignedinteger], spec: PixelSpec, *,
               reference: npt.NDArray[np.unsignedinteger] | None = None) -> bytes:
        """The smallest payload for `frame`. With a `reference` (another frame of the same
        coding spec: the previous slice), predictors using it are tried too, and the payload
        needs that frame to decode only when one of them wins (see `references`)."""
        require_coding_spec(frame, spec, self.capabilities)
        if reference is not None:
            if self.bitstream_version < 2:
                raise CodecError("pred version 1 codes no frame against a reference")
            require_coding_spec(reference, spec, self.capabilities)
        image = np.ascontiguousarray(frame, dtype=np.int32)
        crc = _pixel_crc(image)
        maxval = (1 << spec.bits_stored) - 1
        packing = b""
        used = np.bincount(image.ravel(), minlength=maxval + 1) > 0
        present = np.flatnonzero(used)
        low, span = int(present[0]), int(present[-1] - present[0]) + 1
        # Sparse histograms (windowed 8-bit data, values on a grid, detector gaps) code better as
        # ranks: the prediction no longer spends probability on values that never occur. Even a
        # tenth of the range unused pays for the bitmap (CR 6-15 %, CT 1 % smaller).
        if 10 * len(present) <= 9 * span:
            bitmap = zlib.compress(np.packbits(used[low:low + span]).tobytes(), 9)
            packing = _PACKING.pack(low, span, len(bitmap)) + bitmap
            image = (np.cumsum(used, dtype=np.int32) - 1)[image]
            maxval = len(present) - 1
        model = self.model
        trials: list[tuple[Predictor, npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int32] | None]]
        trials = [(kind, weights, thresholds, None)
                  for kind, weights, thresholds in predictor_options(image, row_step=_FIT_ROW_STEP)]
        ref_crc = b""
        if reference is not None:
            ref_crc = _REFERENCE.pack(_pixel_crc(reference))
            ref_image = _in_coded_values(reference, present if packing else None)
            trials += [(kind, weights, thresholds, ref_image)
                       for kind, weights, thresholds in predictor_options(image, row_step=_FIT_ROW_STEP,
                                                                          reference=ref_image)]
        best = b""
        for kind, weights, thresholds, ref in trials:
            flags = (_LOSSLESS_FLAGS[kind] | (FLAG_PACKED if packing else 0) | (FLAG_MODEL if model is not None else 0)
                     | (FLAG_REFERENCE if ref is not None else 0))
            table = predictor_bytes(kind, weights, thresholds)
            coded, _ = encode_pixels(image, maxval, weights, thresholds, model, reference=ref)
            head = _HEAD.pack(MAGIC, self.bitstream_version, flags, spec.rows, spec.columns, spec.bits_stored,
                              weights.shape[1], k.N_GCLS, k.N_OCLS)
            payload = b"".join([head, model.digest if model is not None else b"", ref_crc if ref is not None else b"",
                                table, packing, _TAIL.pack(crc, len(coded)), coded])
            if not best or len(payload) < len(best):
                best = payload
        return best

    @staticmethod
    def references(payload: bytes) -> bool:
        """Whether `payload` was coded against a reference frame, which its decode then needs."""
        return len(payload) > 4 and payload[:3] == MAGIC and payload[3] >= 2 and bool(payload[4] & FLAG_REFERENCE)

    def decode(self, payload: bytes, spec: PixelSpec, *,
               reference: npt.NDArray[np.unsignedinteger] | None = None) -> npt.NDArray[np.unsignedinteger]:
        """The frame `encode` coded; a payload that `references` a frame needs that `reference`
        (WrongReference without it, or with another frame)."""
        if spec.signed or self.capabilities.unsupported_reasons(spec):
            raise UnsupportedPixelSpec("pred decodes unsigned one-sample frames of 8 or 16 bits allocated only")
        view = memoryview(payload)
        if len(view) < _HEAD.size:
            raise CorruptBitstream("pred payload is shorter than its header")
        magic, version, flags, rows, columns, bits, taps, gcls, ocls = _HEAD.unpack_from(view, 0)
        if magic != MAGIC:
            raise CorruptBitstream("pred payload does not start with its magic")
        if version != self.bitstream_version:
            raise CorruptBitstream(f"pred bitstream version {version} is not {self.bitstream_version}")
        if (rows, columns, bits) != (spec.rows, spec.columns, spec.bits_stored):
            raise CorruptBitstream(f"pred payload is {rows}x{columns} at {bits} bits, expected "
                                   f"{spec.rows}x{spec.columns} at {spec.bits_stored}")
        referenced = bool(flags & FLAG_REFERENCE)
        if ((taps, gcls, ocls) != (k.N_LS + (k.N_REF if referenced else 0), k.N_GCLS, k.N_OCLS)
                or flags & ~_FLAGS[version]):
            raise CorruptBitstream("pred payload declares a predictor layout this version does not have")
        at = _HEAD.size
        model = None
        if flags & FLAG_MODEL:
            digest = bytes(view[at:at + 32])
            at += 32
            model = self._models.get(digest)
            if model is None:
                raise CorruptBitstream(f"pred payload names an unknown context model {digest.hex()[:16]}")
        ref_crc = None
        if referenced:
            if len(view) < at + _REFERENCE.size:
                raise CorruptBitstream("pred payload is truncated in its reference")
            (ref_crc,) = _REFERENCE.unpack_from(view, at)
            at += _REFERENCE.size
            if reference is None:
                raise WrongReference("pred payload was coded against a reference frame, and none was given")
            require_coding_spec(reference, spec, self.capabilities)
            if _pixel_crc(np.asarray(reference)) != ref_crc:
                raise WrongReference("pred payload was coded against another reference frame")
        if flags & (FLAG_SINGLE | FLAG_REFERENCE) and not flags & FLAG_TABLES:
            raise CorruptBitstream("pred payload declares one weight set or a reference but no tables")
        kind = (Predictor.SINGLE if flags & FLAG_SINGLE else Predictor.TABLES if flags & FLAG_TABLES
                else Predictor.FIXED)
        weights, thresholds, at = read_predictor(view, at, kind, referenced=referenced)
        maxval = (1 << bits) - 1
        values = None
        if flags & FLAG_PACKED:
            values = _read_packing(view, at, maxval)
            at += _PACKING.size + _PACKING.unpack_from(view, at)[2]
            maxval = len(values) - 1
        ref_image = None
        if reference is not None and referenced:
            ref_image = _in_coded_values(reference, values)
        if len(view) < at + _TAIL.size:
            raise CorruptBitstream("pred payload is truncated before its coded data")
        crc, length = _TAIL.unpack_from(view, at)
        at += _TAIL.size
        if len(view) != at + length:
            raise CorruptBitstream(f"pred payload holds {len(view) - at} coded bytes, its header says {length}")
        image = decode_pixels(view[at:], (rows, columns), maxval, weights, thresholds, model, reference=ref_image)
        if values is not None:
            image = values[image]
        if _pixel_crc(image) != crc:
            raise CorruptBitstream("pred pixel checksum does not match: the payload is corrupt")
        return image.astype(spec.unsigned_dtype)


def encode_pixels(image: npt.NDArray[np.int32], maxval: int, weights: npt.NDArray[np.int64],
                  thresholds: npt.NDArray[np.int64], model: ContextModel | None,
                  tolerance: npt.NDArray[np.uint8] | None = None,
                  reference: npt.NDArray[np.int32] | None = None) -> tuple[bytes, npt.NDArray[np.int32]]:
    """The range-coded pixels, and the frame a decoder rebuilds from them: `image` itself when
    every pixel is exact, a copy with the tolerant pixels as rebuilt when `tolerance` (one value
    per pixel) allows errors. With a `reference` frame (coded values, the image's shape), the
    weights carry its taps too (see fit_predictor)."""
    capacity = 4 * image.size + 1024
    for attempt in range(2):
        # The kernel writes the rebuilt values over tolerant pixels: never over the caller's frame.
        target = image if tolerance is None else image.copy()
        buf = np.empty(capacity, dtype=np.uint8)  # written front to back before it is read
        status, length = _run(target, True, maxval, weights, thresholds, model, buf, 0,
                              tolerance=_NO_TOLERANCE if tolerance is None else tolerance.ravel(),
                              reference=_NO_REFERENCE if reference is None else reference)
        if status == k.STATUS_OK:
            return buf[:length].tobytes(), target
        if status != k.STATUS_OVERFLOW or attempt == 1:
            break
        capacity = 24 * image.size + 1024  # more than any adaptive binary code can need
    raise CodecError(f"pred encoder failed with status {status}")


def decode_pixels(coded: memoryview, shape: tuple[int, int], maxval: int, weights: npt.NDArray[np.int64],
                  thresholds: npt.NDArray[np.int64], model: ContextModel | None,
                  tolerance: npt.NDArray[np.uint8] | None = None,
                  reference: npt.NDArray[np.int32] | None = None) -> npt.NDArray[np.int32]:
    """The frame `encode_pixels` coded; CorruptBitstream when a value leaves the coded range."""
    buf = np.frombuffer(coded, dtype=np.uint8).copy()
    image = np.zeros(shape, dtype=np.int32)
    status, _ = _run(image, False, maxval, weights, thresholds, model, buf, len(buf),
                     tolerance=_NO_TOLERANCE if tolerance is None else tolerance.ravel(),
                     reference=_NO_REFERENCE if reference is None else reference)
    if status != k.STATUS_OK:
        raise CorruptBitstream("pred coded data decodes to values outside the stored range")
    return image


def predictor_options(image: npt.NDArray[np.int32], *, row_step: int = 1,
                      reference: npt.NDArray[np.int32] | None = None
                      ) -> list[tuple[Predictor, npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """Each predictor worth a trial for a frame of this size, in the order they are tried: one
    weight set below _TRY_SINGLE_BELOW pixels, the class tables from _TRY_FIXED_BELOW up, the fixed
    predictor below that (or when nothing could be fitted). `row_step` thins the tables' fit on
    frames too large for one weight set (see fit_predictor). With a `reference`, the fitted
    predictors use its taps too, and the fixed one is left out: it would not use them."""
    options = []
    if image.size < _TRY_SINGLE_BELOW:
        fitted = fit_predictor(image, classes=False, reference=reference)
        if fitted is not None:
            options.append((Predictor.SINGLE, *fitted))
    if image.size >= _TRY_FIXED_BELOW:
        fitted = fit_predictor(image, row_step=row_step if image.size >= _TRY_SINGLE_BELOW else 1,
                               reference=reference)
        if fitted is not None:
            options.append((Predictor.TABLES, *fitted))
    if reference is None and (not options or image.size < _TRY_FIXED_BELOW):
        options.append((Predictor.FIXED, *default_predictor()))
    return options


def predictor_bytes(kind: Predictor, weights: npt.NDArray[np.int64], thresholds: npt.NDArray[np.int64]) -> bytes:
    """The predictor's parameters as a payload carries them (docs/pred-bitstream.md)."""
    if kind is Predictor.SINGLE:
        return bytes(weights[0].astype("<i2").tobytes())
    if kind is Predictor.TABLES:
        return bytes(np.minimum(thresholds, _NO_THRESHOLD).astype("<u4").tobytes() + weights.astype("<i2").tobytes())
    return b""


def read_predictor(view: memoryview, at: int, kind: Predictor, *, referenced: bool = False
                   ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    """(weights, thresholds, the offset after them) of a `kind` predictor stored at `at`, with
    the reference taps' weights when `referenced`."""
    weights, thresholds = default_predictor(referenced)
    taps = weights.shape[1]
    end = at + _predictor_bytes(kind, taps)
    if len(view) < end:
        raise CorruptBitstream(f"pred payload is truncated in its predictor ({kind.name.lower()})")
    if kind is Predictor.SINGLE:
        weights[:] = np.frombuffer(view[at:end], dtype="<i2").astype(np.int64)
    elif kind is Predictor.TABLES:
        split = at + 4 * _THRESHOLD_COUNT
        thresholds = np.frombuffer(view[at:split], dtype="<u4").astype(np.int64)
        thresholds[thresholds == _NO_THRESHOLD] = 1 << 40
        weights = np.frombuffer(view[split:end], dtype="<i2").astype(np.int64).reshape(k.N_CLS, taps)
    return weights, thresholds, end


def _read_packing(view: memoryview, at: int, maxval: int) -> npt.NDArray[np.int32]:
    """The values a packed frame uses, in increasing order."""
    if len(view) < at + _PACKING.size:
        raise CorruptBitstream("pred payload is truncated in its value set")
    low, span, length = _PACKING.unpack_from(view, at)
    at += _PACKING.size
    if span < 1 or low + span - 1 > maxval or len(view) < at + length:
        raise CorruptBitstream("pred payload has an inconsistent value set")
    try:
        # At most the bitmap's own size: a corrupt stream cannot inflate without bound.
        inflater = zlib.decompressobj()
        packed = inflater.decompress(bytes(view[at:at + length]), (span + 7) // 8)
    except zlib.error as exc:
        raise CorruptBitstream(f"pred value set does not inflate: {exc}") from exc
    if len(packed) != (span + 7) // 8:
        raise CorruptBitstream("pred value set has the wrong size")
    used = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))[:span].astype(bool)
    values: npt.NDArray[np.int32] = (np.flatnonzero(used) + low).astype(np.int32)
    if len(values) == 0:
        raise CorruptBitstream("pred value set is empty")
    return values


def _in_coded_values(reference: npt.NDArray[np.unsignedinteger], values: npt.NDArray[np.integer] | None
                     ) -> npt.NDArray[np.int32]:
    """The reference frame on the scale the frame is coded on: its values as they are, or, for a
    packed frame, each as the rank of the nearest value at or above it in the frame's set."""
    image = np.ascontiguousarray(reference, dtype=np.int32)
    if values is None:
        return image
    ranks: npt.NDArray[np.int32] = np.minimum(np.searchsorted(values, image), len(values) - 1).astype(np.int32)
    return ranks


def _pixel_crc(image: npt.NDArray[np.integer]) -> int:
    return zlib.crc32(image.astype("<u2").tobytes()) & 0xFFFFFFFF


_EMPTY_W1 = np.zeros((0, k.N_FEATURES), dtype=np.int64)
_EMPTY_1 = np.zeros(1, dtype=np.int64)
_NO_DUMP = np.zeros((0, k.N_FEATURES + 2), dtype=np.int64)


_NO_TOLERANCE = np.zeros(0, dtype=np.uint8)
_NO_REFERENCE = np.zeros((0, 0), dtype=np.int32)


def _run(image: npt.NDArray[np.int32], encode: bool, maxval: int, weights: npt.NDArray[np.int64],
         thresholds: npt.NDArray[np.int64], model: ContextModel | None, buf: npt.NDArray[np.uint8],
         in_length: int, dump: npt.NDArray[np.int64] = _NO_DUMP,
         tolerance: npt.NDArray[np.uint8] = _NO_TOLERANCE,
         reference: npt.NDArray[np.int32] = _NO_REFERENCE) -> tuple[int, int]:
    """The typed door to the compiled kernel: every call has the same argument types, so numba
    compiles (or loads from its cache) one specialisation only."""
    referenced = reference.size > 0
    # The kernel does not check bounds: a mismatch here would read past an array.
    if weights.shape != (k.N_CLS, k.N_LS + (k.N_REF if referenced else 0)) or (
            referenced and reference.shape != image.shape):
        raise ValueError(f"pred weights {weights.shape} and reference {reference.shape} do not fit an image "
                         f"{image.shape}")
    if model is None:
        w1, b1, w2, b2 = _EMPTY_W1, _EMPTY_1, _EMPTY_1, _EMPTY_1
    else:
        w1, b1, w2, b2 = model.w1, model.b1, model.w2, model.b2
    if referenced:
        status, length = k.code_referenced_frame(image, bool(encode), int(maxval), weights, thresholds, w1, b1, w2, b2,
                                                 buf, int(in_length), dump, tolerance, reference)
    else:
        status, length = k.code_frame(image, bool(encode), int(maxval), weights, thresholds, w1, b1, w2, b2, buf,
                                      int(in_length), dump, tolerance)
    return int(status), int(length)


def default_predictor(referenced: bool = False) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(W + N) / 2 in every class: what small frames use instead of fitted tables. Referenced,
    the weights have columns for the reference taps too, all 0."""
    weights = np.zeros((k.N_CLS, k.N_LS + (k.N_REF if referenced else 0)), dtype=np.int64)
    weights[:, 0] = 1 << (k.LS_SHIFT - 1)  # tap 0 is N; W is the base
    thresholds = np.full(k.N_GCLS - 1 + k.N_INT - 1, 1 << 40, dtype=np.int64)
    return weights, thresholds


def fit_predictor(image: npt.NDArray[np.int32], classes: bool = True, row_step: int = 1,
                  reference: npt.NDArray[np.int32] | None = None
                  ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """Least-squares weights per class, and the class thresholds, fitted to `image`; None
    where there is too little texture to fit (the fixed predictor then costs no table).

    Classes split the pixels at the quartiles of the kernel's local gradient, and by whether the
    horizontal differences outweigh the vertical ones; the intensity thresholds of the coding
    contexts come along (see _INTENSITY_QUANTILES). Samples are weighted by 1 / (gradient + 4): plain least squares would follow the few
    large errors at edges, which cost little in a log-magnitude code, and neglect the many small
    ones that set the size. Flat neighbourhoods are left out: they cost nothing however predicted.
    With `classes` False, one weight set serves every pixel (and every class holds it). A
    `row_step` above 1 fits on every so many rows only: that much faster, for callers that
    trade a little prediction for time.
    """
    weights, thresholds = default_predictor(referenced=reference is not None)
    rows, cols = image.shape
    below = 0 if reference is None else 1  # a reference tap looks one row down
    if rows < 4 + below or cols < 7:
        return None
    flat = image.astype(np.int64).ravel()
    # The interior, where every tap is inside the image.
    ys, xs = np.mgrid[3:rows - below:row_step, 3:cols - 3]
    at = (ys * cols + xs).ravel()

    def tap(dy: int, dx: int, where: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        found: npt.NDArray[np.int64] = flat[where + (dy * cols + dx)]
        return found

    w, n, nw, ne, ww, nn = (tap(0, -1, at), tap(-1, 0, at), tap(-1, -1, at), tap(-1, 1, at), tap(0, -2, at),
                            tap(-2, 0, at))
    grad = np.abs(n - nw) + np.abs(w - nw) + np.abs(ne - n) + np.abs(w - ww) + np.abs(n - nn)
    keep = grad > 0
    taps_count = weights.shape[1]
    if int(keep.sum()) < 8 * taps_count:
        return None
    if classes:
        quartiles = np.quantile(grad[keep], [(i + 1) / k.N_GCLS for i in range(k.N_GCLS - 1)])
        thresholds[:k.N_GCLS - 1] = np.maximum.accumulate(np.floor(quartiles)).astype(np.int64)
        values = image.ravel()[::7]
        values = values[values != np.bincount(values).argmax()]
        if len(values):
            levels = np.quantile(values, _INTENSITY_QUANTILES)
            thresholds[k.N_GCLS - 1:] = np.maximum.accumulate(np.floor(levels)).astype(np.int64)
    pixel_class = (np.searchsorted(thresholds[:k.N_GCLS - 1], grad, side="left")
                   + k.N_GCLS * (np.abs(w - ww) + np.abs(n - nw) > np.abs(w - nw) + np.abs(n - nn)))
    offsets = k.TAP_DY * cols + k.TAP_DX
    reference_offsets = k.REF_DY * cols + k.REF_DX
    if not classes:
        pixel_class[:] = 0
    for cls in range(k.N_CLS if classes else 1):
        index = np.flatnonzero(keep & (pixel_class == cls))
        if len(index) < 4 * taps_count:
            continue
        if len(index) > _MAX_FIT_SAMPLES:
            index = index[:: -(-len(index) // _MAX_FIT_SAMPLES)]
        where = at[index]
        base = w[index]
        scale = 1.0 / (grad[index] + 4.0)
        taps = flat[where[:, None] + offsets[None, :]]
        if reference is not None:
            near_ref = reference.astype(np.int64).ravel()[where[:, None] + reference_offsets[None, :]]
            taps = np.concatenate([taps, near_ref], axis=1)
        taps = (taps - base[:, None]) * scale[:, None]
        target = (flat[where] - base) * scale
        normal = taps.T @ taps
        normal[np.diag_indices_from(normal)] += 1e-6 * (np.trace(normal) / taps_count + 1.0)
        try:
            solution = np.linalg.solve(normal, taps.T @ target)
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(solution)):
            weights[cls] = np.clip(np.round(solution * (1 << k.LS_SHIFT)), -32768, 32767).astype(np.int64)
    if not classes:
        weights[1:] = weights[0]
    return weights, thresholds
