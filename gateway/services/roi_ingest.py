"""ROI-hybrid coding of a received instance at ingest: the derived dataset and its coded frames.

Each frame gets its mask (the policy's rectangles, or the modality's automatic region plus any
overlay planes), is coded by pixcodec.roi, decoded again and measured against the received frame:
inside the mask every value must be equal, outside none may be further off than the rule's bound.
Only then is the derived instance written: the received dataset with the decoded pixels and the
attributes of a lossy derivation (gateway.derived). Instances where coding alters nothing are
left to the lossless path, so no instance is marked lossy without a reason.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset

from gateway import syntaxes
from gateway.derived import LossyStep, apply_lossy_step, derived_uid
from gateway.instance_blob import PixelMode, PixelPlan
from gateway.pixels import NativeLayout, native_layout
from gateway.policy import RoiParams
from gateway.received import ReceivedDataset, open_received
from pixcodec import CodecError, PixelSpec, VerificationFailed, roi
from pixcodec.decide import Budget, decide, probe_index
from pixcodec.roi import RoiFigures

log = logging.getLogger(__name__)

ROI_STEP = "roi-hybrid"


@dataclass(frozen=True, slots=True)
class StructureMask:
    """A (rows, columns) mask as packed bits: small enough to travel with every ingest job."""

    rows: int
    columns: int
    packed: bytes
    description: str  # what it came from, for the log and the derivation note

    @classmethod
    def of(cls, mask: npt.NDArray[np.bool_], description: str) -> StructureMask:
        rows, columns = mask.shape
        return cls(rows, columns, np.packbits(mask, bitorder="little").tobytes(), description)

    def unpack(self) -> npt.NDArray[np.bool_]:
        bits = np.unpackbits(np.frombuffer(self.packed, np.uint8), count=self.rows * self.columns,
                             bitorder="little")
        mask: npt.NDArray[np.bool_] = bits.astype(bool).reshape(self.rows, self.columns)
        return mask


@dataclass(frozen=True, slots=True)
class RoiCoded:
    """A derived instance ready to be written as a blob, and what coding it cost."""

    derived: ReceivedDataset  # the derived dataset, in its own spool file
    plan: PixelPlan
    figures: RoiFigures
    source_sop_instance_uid: str
    pixel_sha256: str  # of the derived (decoded) frames, little endian


class NotCoded(Exception):
    """ROI-hybrid coding does not apply to this instance; the message says why (for the log)."""


@dataclass(frozen=True, slots=True)
class CodedFrames:
    """Every frame of a native instance coded ROI-hybrid and verified, before any decision."""

    layout: NativeLayout
    coded: tuple[bytes, ...]
    decoded: tuple[npt.NDArray[np.integer], ...]
    figures: RoiFigures
    lossless_bytes: float  # what lossless coding would take: the smaller of JPEG-LS and the budget's pick
    mask_description: str
    lossy_layouts: frozenset[roi.Layout]  # how the frames that altered values were coded

    def verdict(self, params: RoiParams) -> str | None:
        """Why the instance is to stay exact, or None when storing it ROI-hybrid is worth it."""
        total = self.figures
        if total.roi_fraction == 1.0:
            return "the region of interest covers the whole image"
        if total.lossless:
            return "ROI-hybrid coding leaves every pixel exact here"
        saving = 1.0 - total.compressed_bytes / max(self.lossless_bytes, 1.0)
        if saving < 0:
            return f"lossless coding is {100 * -saving:.1f} % smaller than ROI-hybrid here"
        if saving < params.min_saving:
            return (f"ROI-hybrid saves {100 * saving:.1f} % over lossless here, "
                    f"under the rule's {100 * params.min_saving:.0f} %")
        return None


@contextmanager
def native_source(received: ReceivedDataset, scratch: Path) -> Iterator[ReceivedDataset]:
    """The instance with native pixels: itself, or losslessly compressed input decoded into
    `scratch` (removed afterwards). Raises NotCoded for pixel data ROI-hybrid cannot take."""
    pixel = received.pixel
    syntax = received.transfer_syntax
    if pixel is None:
        raise NotCoded("no separable pixel data")
    if not (pixel.encapsulated or syntaxes.is_encapsulated(syntax)):
        if not syntax.is_little_endian:
            raise NotCoded("big endian pixel data")
        yield received
        return
    if syntaxes.is_lossy(syntax):
        raise NotCoded("pixel data in a lossy transfer syntax")
    try:
        yield _decompressed(received, scratch)
    finally:
        scratch.unlink(missing_ok=True)


def code_frames(native: ReceivedDataset, params: RoiParams, lossless: Budget | None = None,
                structures: StructureMask | None = None) -> CodedFrames:
    """Code and verify every frame of a native little endian instance (`native_source`).

    `lossless` is the budget the lossless path would code with: its pick on the probe frame
    scales the baseline the saving is measured against. `structures` is kept exact on every
    frame, beside the rule's own region. Raises NotCoded for a pixel layout the codec does not
    take, VerificationFailed if a decoded frame breaks either guarantee.
    """
    pixel = native.pixel
    assert pixel is not None
    layout = native_layout(native.header, native.transfer_syntax, pixel)
    if layout is None:
        raise NotCoded("pixel layout not coded by the ROI-hybrid codec")
    masks = _MaskSource(native.header, layout.spec, params, structures)
    coded: list[bytes] = []
    decoded: list[npt.NDArray[np.integer]] = []
    parts: list[RoiFigures] = []
    lossy_layouts: set[roi.Layout] = set()
    jpeg_ls_bytes = 0
    probe, probe_ratio = probe_index(layout.frames), 1.0
    with native.path.open("rb") as fp:
        fp.seek(native.dataset_offset + pixel.value_start)
        for index in range(layout.frames):
            frame = layout.frame_from_bytes(fp.read(layout.frame_nbytes))
            mask = masks.mask(frame)
            # Not decoded here: the instance blob is decoded and checked whole before it is trusted
            # (prepare), and the frame checksum inside each coded frame pins it to `decoded`.
            encoded = roi.encode_measured(frame, layout.spec, mask, params.max_error, verify=False)
            jpeg_ls_bytes += encoded.lossless_bytes
            if index == probe and lossless is not None:
                probe_ratio = _best_lossless(frame, layout.spec, lossless) / max(encoded.lossless_bytes, 1)
            figures = roi.measure(frame, encoded.decoded, mask, layout.spec, len(encoded.blob))
            if figures.max_error_inside != 0 or figures.max_error_outside > params.max_error:
                raise VerificationFailed(
                    f"ROI-hybrid frame off by {figures.max_error_inside} inside, "
                    f"{figures.max_error_outside} outside (bound {params.max_error})")
            if not figures.lossless:
                lossy_layouts.add(encoded.layout)
            coded.append(encoded.blob)
            decoded.append(encoded.decoded)
            parts.append(figures)
    # Against the smaller of JPEG-LS and what the lossless path would pick (JPEG-XL can be far
    # smaller, on ultrasound above all): no instance is made lossy to end up larger.
    return CodedFrames(layout, tuple(coded), tuple(decoded), roi.combine(parts, layout.spec),
                       jpeg_ls_bytes * min(probe_ratio, 1.0), masks.description, frozenset(lossy_layouts))


def code_instance(received: ReceivedDataset, params: RoiParams, derived_path: Path,
                  lossless: Budget | None = None, structures: StructureMask | None = None) -> RoiCoded:
    """Code every frame ROI-hybrid and write the derived dataset.

    Losslessly compressed pixel data is decoded first; the derived instance then has native pixels
    in explicit VR little endian. Raises NotCoded when the instance is to be stored losslessly
    instead (big endian or undecodable pixels, a layout the codec does not take, a mask that leaves
    nothing outside, too small a saving), and VerificationFailed if a decoded frame breaks either
    guarantee.
    """
    with native_source(received, derived_path.with_name(derived_path.name + ".native")) as native:
        frames = code_frames(native, params, lossless, structures)
        why_not = frames.verdict(params)
        if why_not is not None:
            raise NotCoded(why_not)
        _write_derived(native, frames, params, derived_path)
    derived = open_received(derived_path)
    derived_layout = native_layout(derived.header, derived.transfer_syntax, derived.pixel) if derived.pixel else None
    if derived_layout is None or derived_layout.frames != frames.layout.frames:
        raise VerificationFailed("the derived dataset's pixel layout differs from the coded frames")
    digest = hashlib.sha256()
    for frame in frames.decoded:
        digest.update(frame.astype(frame.dtype.newbyteorder("<"), copy=False).tobytes())
    return RoiCoded(
        derived=derived,
        plan=PixelPlan(PixelMode.ROI_HYBRID, derived_layout, roi_frames=frames.coded),
        figures=frames.figures,
        source_sop_instance_uid=str(received.header.SOPInstanceUID),
        pixel_sha256=digest.hexdigest(),
    )


def _decompressed(received: ReceivedDataset, path: Path) -> ReceivedDataset:
    """Losslessly compressed input as the same dataset with native pixels (explicit VR little
    endian): the derived instance is written from it, and its pixels are what must stay exact."""
    try:
        dataset = pydicom.dcmread(received.path, force=True)
        dataset.decompress(generate_instance_uid=False)
        dataset.save_as(path, enforce_file_format=True)
    except Exception as exc:  # the pixel handlers raise whatever their backends do
        raise NotCoded(f"pixel data does not decode: {type(exc).__name__}") from exc
    return open_received(path)


def _best_lossless(frame: npt.NDArray[np.integer], spec: PixelSpec, budget: Budget) -> int:
    """Bytes of `frame` as the lossless path's mode decision would code it."""
    try:
        chosen = decide(frame, spec, budget, verify=False).encoded
    except CodecError:
        return sys.maxsize
    return len(chosen.payload) + len(chosen.table)


class _MaskSource:
    """The mask of each frame: configured rectangles or the automatic region, plus overlay planes
    and what the study's segmentations and structure sets mark."""

    def __init__(self, header: Dataset, spec: PixelSpec, params: RoiParams,
                 structures: StructureMask | None = None) -> None:
        self._spec, self._params = spec, params
        self._modality = str(header.get("Modality", "")).strip().upper()
        self._slope, self._intercept = roi.rescale_of(header)
        shape = (spec.rows, spec.columns)
        self._fixed: npt.NDArray[np.bool_] | None = None
        if params.roi_source == "rectangles":
            rects = [roi.Rect(top, left, rows, columns) for top, left, rows, columns in params.rectangles]
            self._fixed = roi.rectangles_mask(shape, rects)
            self.description = "configured rectangles"
        else:
            self.description = f"automatic {self._modality or 'unknown modality'} region"
        self._overlays = _overlay_mask(header, shape)
        if self._overlays is not None:
            self.description += " and overlay planes"
        self._structures: npt.NDArray[np.bool_] | None = None
        if structures is not None:
            if (structures.rows, structures.columns) != shape:
                raise NotCoded(f"{structures.description} does not match the image's size")
            self._structures = structures.unpack()
            self.description += f" and the study's {structures.description}"

    def mask(self, frame: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
        spec = self._spec
        if self._fixed is not None:
            mask = self._fixed.copy()
        else:
            mask = roi.automatic_mask(frame, self._modality, photometric=spec.photometric,
                                      bits_stored=spec.bits_stored, slope=self._slope, intercept=self._intercept)
        if self._overlays is not None:
            mask |= self._overlays
        if self._structures is not None:
            mask |= self._structures
        return mask


def _overlay_mask(header: Dataset, shape: tuple[int, int]) -> npt.NDArray[np.bool_] | None:
    """Overlay planes (60xx,3000) always stay exact: they mark what a reader annotated."""
    planes: list[npt.NDArray[Any]] = []
    origins: list[tuple[int, int]] = []
    for group in range(0x6000, 0x6020, 2):
        if (group, 0x3000) not in header:
            continue
        try:
            plane: npt.NDArray[Any] = np.asarray(header.overlay_array(group))
        except Exception as exc:  # a malformed overlay must not stop the instance from being stored
            log.warning("overlay plane unreadable, kept out of the ROI", extra={"fields": {"error": str(exc)}})
            continue
        if plane.ndim == 3:  # multi-frame overlays: any frame marked keeps the pixel exact
            plane = np.asarray(plane.any(axis=0))
        origin = header.get((group, 0x0050))
        planes.append(plane)
        origins.append((int(origin.value[0]), int(origin.value[1])) if origin is not None else (1, 1))
    if not planes:
        return None
    return roi.overlay_mask(planes, shape, origins=origins)


def _write_derived(received: ReceivedDataset, frames: CodedFrames, params: RoiParams, path: Path) -> None:
    layout, figures = frames.layout, frames.figures
    dataset = pydicom.dcmread(received.path, force=True)
    pixel = received.pixel
    assert pixel is not None
    with received.path.open("rb") as fp:
        fp.seek(received.dataset_offset + pixel.value_start + layout.frames_nbytes)
        tail = fp.read(pixel.value_length - layout.frames_nbytes)
    dataset.PixelData = b"".join(layout.frame_to_bytes(frame) for frame in frames.decoded) + tail
    method = roi.lossy_method(frames.lossy_layouts)
    description = (
        f"ROI-hybrid compression: {100 * figures.roi_fraction:.1f} % of pixel values ({frames.mask_description}) "
        f"kept exact, the others at most {params.max_error} off ({roi.METHOD_DESCRIPTIONS[method]})"
    )
    step = LossyStep(ratio=figures.ratio, method=method, description=description)
    apply_lossy_step(dataset, step, derived_uid(str(dataset.SOPInstanceUID), f"{ROI_STEP}:{params.max_error}"))
    dataset.save_as(path, enforce_file_format=True)
