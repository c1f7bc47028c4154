"""Small builders shared by the pixcodec tests."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEGLSLossless, SecondaryCaptureImageStorage, generate_uid

from pixcodec import ContainerReader, ContainerWriter, FrameCodec, PixelSpec


def make_spec(rows: int = 7, columns: int = 9, samples: int = 1, allocated: int = 16, stored: int = 12,
              signed: bool = False) -> PixelSpec:
    return PixelSpec(rows=rows, columns=columns, samples_per_pixel=samples, bits_allocated=allocated,
                     bits_stored=stored, signed=signed, photometric="RGB" if samples == 3 else "MONOCHROME2")


def clean_frame(spec: PixelSpec, rng: np.random.Generator) -> npt.NDArray[np.integer]:
    """Random values that use exactly Bits Stored bits (sign-extended when signed)."""
    if spec.signed:
        low, high = -(1 << (spec.bits_stored - 1)), (1 << (spec.bits_stored - 1))
    else:
        low, high = 0, 1 << spec.bits_stored
    return rng.integers(low, high, size=spec.frame_shape, dtype=np.int64).astype(spec.dtype)


def smooth_frame(spec: PixelSpec) -> npt.NDArray[np.integer]:
    """A gradient over the whole stored range: the kind of data JPEG-LS is built for."""
    ramp = np.add.outer(np.arange(spec.rows), np.arange(spec.columns)) * 37
    if spec.samples_per_pixel > 1:
        ramp = np.stack([ramp + 11 * s for s in range(spec.samples_per_pixel)], axis=-1)
    span = 1 << spec.bits_stored
    values = ramp % span - (span // 2 if spec.signed else 0)
    return values.astype(spec.dtype)


def junk_frame(spec: PixelSpec, rng: np.random.Generator) -> npt.NDArray[np.integer]:
    """Raw words with arbitrary bits above Bits Stored (overlays, garbage, broken sign extension)."""
    words = rng.integers(0, 1 << spec.bits_allocated, size=spec.frame_shape, dtype=np.uint64)
    frame = words.astype(spec.unsigned_dtype)
    # At least one word with a bit just above Bits Stored: neither clear nor a sign extension.
    if spec.bits_stored < spec.bits_allocated:
        frame.flat[0] = 1 << spec.bits_stored
    return frame.view(spec.dtype)


def round_trip(codec: FrameCodec, spec: PixelSpec, frames: list[npt.NDArray[np.integer]]) -> ContainerReader:
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, codec, spec)
    for frame in frames:
        writer.add_frame(frame)
    total = writer.finish()
    assert total == len(buffer.getvalue())
    buffer.seek(0)
    reader = ContainerReader(buffer)
    assert reader.frame_count == len(frames)
    for index, frame in enumerate(frames):
        decoded = reader.frame(index)
        assert decoded.dtype == frame.dtype
        assert decoded.shape == frame.shape
        assert np.array_equal(decoded, frame)
    return reader


def jpeg_ls_dataset(frames: list[bytes], spec: PixelSpec) -> Dataset:
    """A minimal dataset carrying `frames` as JPEG-LS Lossless fragments."""
    return encapsulated_dataset(frames, spec, JPEGLSLossless)


def encapsulated_dataset(frames: list[bytes], spec: PixelSpec, transfer_syntax: str) -> Dataset:
    """A Secondary Capture dataset carrying `frames` as one fragment each under `transfer_syntax`,
    complete enough for DCMTK to read and rewrite."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.SamplesPerPixel = spec.samples_per_pixel
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = spec.bits_allocated, spec.bits_stored, spec.bits_stored - 1
    ds.PixelRepresentation = int(spec.signed)
    ds.PhotometricInterpretation = spec.photometric
    ds.NumberOfFrames = len(frames)
    if spec.samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    return ds


def dcmtk_decompressed(tool: str, ds: Dataset, workdir: Path) -> Dataset:
    """`ds` written to a file, decompressed by the DCMTK command-line `tool` and read back."""
    if shutil.which(tool) is None:
        raise AssertionError(f"{tool} not found: install DCMTK (Debian package dcmtk)")
    source, target = workdir / "compressed.dcm", workdir / "decompressed.dcm"
    ds.save_as(source, enforce_file_format=True)
    result = subprocess.run([tool, str(source), str(target)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{tool} failed: {result.stdout}{result.stderr}"
    assert "W:" not in result.stdout + result.stderr, f"{tool} warned: {result.stdout}{result.stderr}"
    return pydicom.dcmread(target)
