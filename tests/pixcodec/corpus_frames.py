"""Raw stored words of corpus images, as the gateway hands them to pixcodec."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import ImplicitVRLittleEndian

from pixcodec import PixelSpec

CORPUS_DIR = Path(os.environ.get("PACSGW_CORPUS", Path(__file__).resolve().parents[3] / "shared" / "corpus"))


def manifest() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((CORPUS_DIR / "manifest.json").read_text())
    return entries


def spec_of(entry: dict[str, Any]) -> PixelSpec:
    return PixelSpec(
        rows=entry["rows"], columns=entry["columns"], samples_per_pixel=entry["samples_per_pixel"],
        bits_allocated=entry["bits_allocated"], bits_stored=entry["bits_stored"], signed=entry["signed"],
        photometric=entry["photometric_interpretation"],
        planar_configuration=entry["planar_configuration"] or 0,
    )


def read_dataset(entry: dict[str, Any]) -> Dataset:
    ds = pydicom.dcmread(CORPUS_DIR / entry["path"], **entry.get("read_kwargs", {}))
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def frame_indices(count: int, limit: int) -> list[int]:
    """Up to `limit` frames spread over the whole object (first and last included)."""
    if count <= limit:
        return list(range(count))
    if limit == 1:
        return [0]
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)})


def raw_frames(entry: dict[str, Any], limit: int = 4) -> Iterator[npt.NDArray[np.integer]]:
    """The stored words, bits above Bits Stored included, one interleaved array per frame."""
    spec = spec_of(entry)
    ds = read_dataset(entry)
    count = entry["frames"]
    if entry["encapsulated"]:
        for index in frame_indices(count, limit):
            # Decode only the frames used: some cines hold 120 JPEG frames.
            frame = pixel_array(ds, index=index if count > 1 else None).reshape(spec.frame_shape)
            yield np.ascontiguousarray(frame.astype(spec.dtype, copy=False))
        return
    order = "<" if ds.is_little_endian else ">"
    words = np.frombuffer(ds.PixelData, dtype=spec.dtype.newbyteorder(order))
    per_frame = spec.rows * spec.columns * spec.samples_per_pixel
    words = words[: per_frame * count].astype(spec.dtype)
    for index in frame_indices(count, limit):
        flat = words[index * per_frame:(index + 1) * per_frame]
        if spec.samples_per_pixel > 1 and spec.planar_configuration == 1:
            frame = flat.reshape(spec.samples_per_pixel, spec.rows, spec.columns).transpose(1, 2, 0)
        else:
            frame = flat.reshape(spec.frame_shape)
        yield np.ascontiguousarray(frame)
