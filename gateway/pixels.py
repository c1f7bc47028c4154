"""Native (uncompressed) Pixel Data as frames of raw stored words, and back to the exact bytes.

The codecs get the words exactly as stored, bits above Bits Stored included (old overlays, sign
extension): a dataset must be rebuilt byte for byte, so nothing is masked or sign-corrected here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from gateway.dataset_layout import PixelElement
from gateway.errors import PixelDataInconsistent
from pixcodec import PixelSpec

# Trailing bytes beyond the frames (the pad byte of odd lengths, stray writer bytes) kept in the
# blob header; more than this and the value is not treated as plain frames.
MAX_TAIL_BYTES = 64


@dataclass(frozen=True, slots=True)
class NativeLayout:
    rows: int
    columns: int
    samples: int
    frames: int
    bits_allocated: int
    dtype: str  # numpy dtype of the stored words, with byte order: "|u1", "<u2", ">i2", ...
    planar: int  # (0028,0006): 1 = colour-by-plane
    swap_pairs: bool  # 8-bit words in an OW element of a big endian dataset are byte-swapped
    spec: PixelSpec

    @property
    def frame_nbytes(self) -> int:
        return self.rows * self.columns * self.samples * (self.bits_allocated // 8)

    @property
    def frames_nbytes(self) -> int:
        return self.frame_nbytes * self.frames

    def frame_from_bytes(self, data: bytes) -> np.ndarray:
        """A frame as the codecs take it: native byte order, (rows, columns[, samples])."""
        if self.swap_pairs:
            data = np.frombuffer(data, np.uint8).reshape(-1, 2)[:, ::-1].tobytes()
        words = np.frombuffer(data, np.dtype(self.dtype))
        words = words.astype(words.dtype.newbyteorder("="), copy=False)
        if self.samples == 1:
            return words.reshape(self.rows, self.columns)
        if self.planar == 1:
            return np.ascontiguousarray(
                words.reshape(self.samples, self.rows, self.columns).transpose(1, 2, 0)
            )
        return words.reshape(self.rows, self.columns, self.samples)

    def frame_to_bytes(self, frame: np.ndarray) -> bytes:
        if self.samples > 1 and self.planar == 1:
            frame = frame.transpose(2, 0, 1)
        data = np.ascontiguousarray(frame, dtype=np.dtype(self.dtype)).tobytes()
        if self.swap_pairs:
            data = np.frombuffer(data, np.uint8).reshape(-1, 2)[:, ::-1].tobytes()
        return data


def _int(header: Dataset, keyword: str, default: int | None = None) -> int:
    value = header.get(keyword, default)
    if value is None or value == "":
        raise PixelDataInconsistent(f"Pixel Data present but {keyword} is missing")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise PixelDataInconsistent(f"{keyword} is not a number: {value!r}") from exc


def expected_length(header: Dataset) -> int:
    """Bytes of native Pixel Data the image description calls for (PS3.5 8.1.1)."""
    rows, columns = _int(header, "Rows"), _int(header, "Columns")
    samples = _int(header, "SamplesPerPixel", 1)
    bits = _int(header, "BitsAllocated")
    frames = max(1, _int(header, "NumberOfFrames", 1))
    photometric = str(header.get("PhotometricInterpretation", ""))
    pixels = rows * columns * frames
    if photometric in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        return pixels * 2 * (bits // 8)  # two samples per pixel after horizontal subsampling
    return (pixels * samples * bits + 7) // 8


def native_layout(header: Dataset, syntax: UID, pixel: PixelElement) -> NativeLayout | None:
    """The frame layout of native Pixel Data, or None when no image codec should take it.

    Raises PixelDataInconsistent when the value is shorter than the image description requires.
    """
    needed = expected_length(header)
    if pixel.value_length < needed:
        raise PixelDataInconsistent(
            f"Pixel Data has {pixel.value_length} bytes, image needs {needed}"
        )
    bits = _int(header, "BitsAllocated")
    samples = _int(header, "SamplesPerPixel", 1)
    photometric = str(header.get("PhotometricInterpretation", "")).strip()
    if (
        pixel.tag != 0x7FE00010
        or bits not in (8, 16)
        or samples not in (1, 3)
        or photometric in ("YBR_FULL_422", "YBR_PARTIAL_422")
        or pixel.value_length - needed > MAX_TAIL_BYTES
    ):
        return None
    bits_stored = _int(header, "BitsStored", bits)
    signed = _int(header, "PixelRepresentation", 0) == 1
    little = syntax.is_little_endian
    order = "|" if bits == 8 else ("<" if little else ">")
    dtype = f"{order}{'i' if signed and bits == 16 else 'u'}{bits // 8}"
    planar = _int(header, "PlanarConfiguration", 0) if samples > 1 else 0
    swap_pairs = bits == 8 and not little and pixel.vr == "OW"
    if swap_pairs and pixel.value_length % 2:
        return None
    spec = PixelSpec(
        rows=_int(header, "Rows"),
        columns=_int(header, "Columns"),
        samples_per_pixel=samples,
        bits_allocated=bits,
        bits_stored=min(max(bits_stored, 1), bits),
        signed=signed and bits == 16,
        photometric=photometric or "MONOCHROME2",
        planar_configuration=planar,
    )
    return NativeLayout(
        rows=spec.rows,
        columns=spec.columns,
        samples=samples,
        frames=max(1, _int(header, "NumberOfFrames", 1)),
        bits_allocated=bits,
        dtype=dtype,
        planar=planar,
        swap_pairs=swap_pairs,
        spec=spec,
    )
