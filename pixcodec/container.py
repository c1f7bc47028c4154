"""The pixcodec container: one blob per instance, streamed frame by frame.

Byte layout (documented and versioned in docs/pixcodec-container.md): a fixed header with the
codec and pixel spec, the frame payloads back to back, then the frame index and a fixed footer.
Writing never seeks, so any byte sink works; reading seeks to one frame, so memory stays at
about one frame either way.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from . import preprocess
from .base import CodecError, CorruptBitstream, FrameCodec, PixelSpec, UnsupportedPixelSpec, VerificationFailed
from .preprocess import Mode, Preprocessing
from .registry import CodecRegistry, default_registry

__all__ = ["FORMAT_VERSION", "MAGIC", "ContainerReader", "ContainerWriter"]

MAGIC = b"\x89PXC\r\n\x1a\n"  # PNG-style: a non-ASCII byte and line endings catch text-mode mangling
END_MAGIC = b"PXCE"
FORMAT_VERSION = 1

_PREFIX = struct.Struct("<8sHH")  # magic, format version, header length
_SPEC = struct.Struct("<HIIBBBBB")  # codec version, rows, columns, samples, BA, BS, PR, planar
_ENTRY = struct.Struct("<QIBBII")  # offset, length, mode, depth, payload CRC, frame CRC
_FOOTER = struct.Struct("<QII4s")  # index offset, frame count, index CRC, end magic
_CRC = struct.Struct("<I")
_MAX_HEADER = 4096
_MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class FrameEntry:
    offset: int  # from the start of the container
    length: int
    record: Preprocessing
    payload_crc: int
    frame_crc: int


def _crc(data: bytes | memoryview | npt.NDArray[np.generic]) -> int:
    buffer = data.data if isinstance(data, np.ndarray) else data  # C-contiguous: checked by callers
    return zlib.crc32(buffer) & 0xFFFFFFFF


def _encode_header(codec: FrameCodec, spec: PixelSpec) -> bytes:
    codec_id = codec.codec_id.encode("ascii")
    photometric = spec.photometric.encode("ascii")
    if not 1 <= len(codec_id) <= _MAX_NAME:
        raise CodecError(f"codec id {codec.codec_id!r} must be 1 to {_MAX_NAME} ASCII characters")
    body = (
        bytes([len(codec_id)]) + codec_id
        + _SPEC.pack(codec.bitstream_version, spec.rows, spec.columns, spec.samples_per_pixel,
                     spec.bits_allocated, spec.bits_stored, int(spec.signed), spec.planar_configuration)
        + bytes([len(photometric)]) + photometric
    )
    length = _PREFIX.size + len(body) + _CRC.size
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, length) + body
    return head + _CRC.pack(_crc(head))


class ContainerWriter:
    """Streams verified frames to `fp`; `finish` appends the index. Nothing is seeked or re-read."""

    def __init__(self, fp: BinaryIO, codec: FrameCodec, spec: PixelSpec, *, verify: bool = True) -> None:
        """`verify=False` only for callers that decode the finished container themselves before
        trusting it (the stored form is then what gets checked, not an in-memory copy)."""
        reasons = codec.capabilities.unsupported_reasons(spec)
        if reasons:
            raise UnsupportedPixelSpec(f"{codec.codec_id} cannot code this pixel spec: " + "; ".join(reasons))
        self._fp, self._codec, self._spec = fp, codec, spec
        self._verify = verify
        self._entries: list[FrameEntry] = []
        self._failed: str | None = None
        self._finished = False
        self._written = 0
        self._write(_encode_header(codec, spec))

    @property
    def frames_written(self) -> int:
        return len(self._entries)

    @property
    def bytes_written(self) -> int:
        return self._written

    def add_frame(self, frame: npt.NDArray[np.integer]) -> None:
        """Preprocess, encode, decode again and compare; write the payload only if it is exact."""
        if self._finished:
            raise CodecError("the container is already finished")
        self._spec.check_frame(frame)
        frame = np.ascontiguousarray(frame)
        try:
            payload, record = self._encode_verified(frame)
        except CodecError as exc:
            # A blob missing a frame must never be finished as if it were whole.
            self._failed = str(exc)
            raise
        self._entries.append(FrameEntry(self._written, len(payload), record, _crc(payload), _crc(frame)))
        self._write(payload)

    def _encode_verified(self, frame: npt.NDArray[np.integer]) -> tuple[bytes, Preprocessing]:
        coded, record = preprocess.forward(frame, self._spec)
        coding = preprocess.coding_spec(self._spec, record)
        codec_name = f"{self._codec.codec_id}/{self._codec.bitstream_version}"
        try:
            payload = bytes(self._codec.encode(coded, coding))
        except CodecError:
            raise
        except Exception as exc:  # native libraries raise whatever they like
            raise CodecError(f"{codec_name} failed to encode ({record.describe()}): {exc}") from exc
        if not self._verify:
            return payload, record
        try:
            decoded = self._codec.decode(payload, coding)
            restored = preprocess.inverse(np.asarray(decoded).astype(coding.dtype, copy=False), record, self._spec)
        except Exception as exc:
            raise VerificationFailed(f"{codec_name} cannot decode its own output ({record.describe()}): {exc}") from exc
        if restored.dtype != frame.dtype or restored.shape != frame.shape or not np.array_equal(restored, frame):
            raise VerificationFailed(f"{codec_name} did not round-trip the frame exactly ({record.describe()})")
        return payload, record

    def finish(self) -> int:
        """Write the frame index and footer; return the container's total size in bytes."""
        if self._finished:
            raise CodecError("the container is already finished")
        if self._failed is not None:
            raise CodecError(f"a frame failed, the container cannot be finished: {self._failed}")
        index_offset = self._written
        index = b"".join(
            _ENTRY.pack(e.offset, e.length, int(e.record.mode), e.record.depth, e.payload_crc, e.frame_crc)
            for e in self._entries
        )
        protected = index + struct.pack("<QI", index_offset, len(self._entries))
        self._write(index + _FOOTER.pack(index_offset, len(self._entries), _crc(protected), END_MAGIC))
        self._finished = True
        return self._written

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            count = self._fp.write(view)
            if count is None or count <= 0:  # raw non-blocking streams may accept nothing
                raise OSError("the output stream accepted no bytes")
            view = view[count:]
            self._written += count


class ContainerReader:
    """Validates header, index and footer up front; decodes one frame per call, checked twice.

    Each payload's CRC is checked before a native decoder sees it, so damaged input never reaches
    one; the decoded frame's CRC is checked after, so a decoder bug cannot return wrong pixels.
    """

    def __init__(self, fp: BinaryIO, registry: CodecRegistry | None = None) -> None:
        self._fp = fp
        try:
            self._start = fp.tell()
            self._size = fp.seek(0, io.SEEK_END) - self._start
        except (OSError, ValueError) as exc:
            raise CodecError(f"the container stream must be seekable: {exc}") from exc
        self._header_length, self.codec_id, self.codec_version, self.spec = self._read_header()
        self._entries = self._read_index()
        self.codec: FrameCodec = (registry or default_registry()).get(self.codec_id, self.codec_version)

    @property
    def frame_count(self) -> int:
        return len(self._entries)

    def preprocessing(self, index: int) -> Preprocessing:
        return self._entry(index).record

    def payload(self, index: int) -> bytes:
        """The codec's payload for one frame, CRC-checked."""
        entry = self._entry(index)
        payload = self._read_at(entry.offset, entry.length)
        if _crc(payload) != entry.payload_crc:
            raise CorruptBitstream(f"frame {index}: payload checksum mismatch")
        return payload

    def standard_codestream(self, index: int) -> bytes | None:
        """The payload if it is, as is, a frame for the codec's DICOM transfer syntax, else None.

        True when the coded values are the stored values (unsigned, bits above Bits Stored clear):
        the gateway may then send it without decoding. Signed frames are stored offset and frames
        with overlay bits as full words, which a standard decoder would not give back as stored.
        The transfer syntax's own rules (e.g. PS3.5 8.2.3 photometric interpretations) stay the
        caller's to check.
        """
        record = self.preprocessing(index)
        if self.codec.transfer_syntax_uid is None or record.mode is not Mode.DEPTH or record.depth < 2:
            return None
        return self.payload(index)

    def frame(self, index: int) -> npt.NDArray[np.integer]:
        entry = self._entry(index)
        payload = self.payload(index)
        coding = preprocess.coding_spec(self.spec, entry.record)
        try:
            decoded = np.asarray(self.codec.decode(payload, coding))
        except CorruptBitstream:
            raise
        except Exception as exc:
            raise CorruptBitstream(f"frame {index}: {self.codec_id} decoding failed: {exc}") from exc
        if decoded.dtype != coding.dtype or decoded.shape != coding.frame_shape:
            raise CorruptBitstream(f"frame {index}: decoded {decoded.dtype}{decoded.shape}, "
                                   f"expected {coding.dtype}{coding.frame_shape}")
        frame = np.ascontiguousarray(preprocess.inverse(decoded, entry.record, self.spec))
        if _crc(frame) != entry.frame_crc:
            raise CorruptBitstream(f"frame {index}: decoded pixels do not match their stored checksum")
        return frame

    def frames(self) -> Iterator[npt.NDArray[np.integer]]:
        for index in range(self.frame_count):
            yield self.frame(index)

    def _entry(self, index: int) -> FrameEntry:
        if not 0 <= index < len(self._entries):
            raise IndexError(f"frame {index} out of range (0..{len(self._entries) - 1})")
        return self._entries[index]

    def _read_at(self, offset: int, length: int) -> bytes:
        self._fp.seek(self._start + offset)
        data = b""
        while len(data) < length:
            # Raw streams may return fewer bytes than asked without being at the end.
            chunk = self._fp.read(length - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) != length:
            raise CorruptBitstream(f"truncated: {length} bytes expected at {offset}, got {len(data)}")
        return data

    def _read_header(self) -> tuple[int, str, int, PixelSpec]:
        if self._size < _PREFIX.size + _FOOTER.size:
            raise CorruptBitstream(f"{self._size} bytes is too short for a container")
        magic, version, length = _PREFIX.unpack(self._read_at(0, _PREFIX.size))
        if magic != MAGIC:
            raise CorruptBitstream("not a pixcodec container (bad magic)")
        if version != FORMAT_VERSION:
            raise CorruptBitstream(f"container format version {version} is not known to this release")
        if not _PREFIX.size + _CRC.size < length <= min(_MAX_HEADER, self._size - _FOOTER.size):
            raise CorruptBitstream(f"header length {length} is impossible")
        header = self._read_at(0, length)
        if _crc(header[:-_CRC.size]) != _CRC.unpack(header[-_CRC.size:])[0]:
            raise CorruptBitstream("header checksum mismatch")
        try:
            return (length, *_parse_header_body(header[_PREFIX.size:-_CRC.size]))
        except (struct.error, IndexError, UnicodeDecodeError, UnsupportedPixelSpec) as exc:
            raise CorruptBitstream(f"malformed header: {exc}") from exc

    def _read_index(self) -> list[FrameEntry]:
        index_offset, count, index_crc, end_magic = _FOOTER.unpack(
            self._read_at(self._size - _FOOTER.size, _FOOTER.size))
        if end_magic != END_MAGIC:
            raise CorruptBitstream("bad footer magic (truncated or unfinished container)")
        index_length = count * _ENTRY.size
        if index_offset < self._header_length or index_offset + index_length != self._size - _FOOTER.size:
            raise CorruptBitstream(f"footer index offset {index_offset} / frame count {count} do not fit the size")
        index = self._read_at(index_offset, index_length)
        if _crc(index + struct.pack("<QI", index_offset, count)) != index_crc:
            raise CorruptBitstream("frame index checksum mismatch")
        entries: list[FrameEntry] = []
        expected_offset = self._header_length
        for number, fields in enumerate(_ENTRY.iter_unpack(index)):
            offset, length, mode, depth, payload_crc, frame_crc = fields
            record = preprocess.parse_record(mode, depth)
            preprocess.check_record(record, self.spec)
            if offset != expected_offset or length < 1:
                raise CorruptBitstream(f"frame {number}: payload at {offset}+{length} breaks the frame sequence")
            expected_offset = offset + length
            entries.append(FrameEntry(offset, length, record, payload_crc, frame_crc))
        if expected_offset != index_offset:
            raise CorruptBitstream("frame payloads do not end where the index starts")
        return entries


def _parse_header_body(body: bytes) -> tuple[str, int, PixelSpec]:
    name_length = body[0]
    codec_id = body[1:1 + name_length].decode("ascii")
    position = 1 + name_length
    version, rows, columns, samples, allocated, stored, representation, planar = _SPEC.unpack_from(body, position)
    position += _SPEC.size
    photometric_length = body[position]
    photometric = body[position + 1:position + 1 + photometric_length].decode("ascii")
    if position + 1 + photometric_length != len(body) or len(codec_id) != name_length or not codec_id:
        raise CorruptBitstream("header fields do not fill the header exactly")
    if representation not in (0, 1):
        raise CorruptBitstream(f"(0028,0103) Pixel Representation {representation} in header")
    spec = PixelSpec(rows=rows, columns=columns, samples_per_pixel=samples, bits_allocated=allocated,
                     bits_stored=stored, signed=bool(representation), photometric=photometric,
                     planar_configuration=planar)
    return codec_id, version, spec
