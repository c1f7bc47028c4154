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
from typing import BinaryIO, cast

import numpy as np
import numpy.typing as npt

from . import preprocess
from .base import (CodecError, CorruptBitstream, FrameCodec, PixelSpec, ReferencingCodec, UnsupportedPixelSpec,
                   VerificationFailed)
from .preprocess import Mode, Preprocessing
from .registry import CodecRegistry, default_registry

__all__ = ["FORMAT_VERSION", "MAGIC", "MAX_REFERENCE_CHAIN", "ContainerReader", "ContainerWriter", "EncodedFrame",
           "decode_payload", "encode_frame", "encode_preprocessed", "may_reference", "references_previous"]

MAGIC = b"\x89PXC\r\n\x1a\n"  # PNG-style: a non-ASCII byte and line endings catch text-mode mangling
END_MAGIC = b"PXCE"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

_PREFIX = struct.Struct("<8sHH")  # magic, format version, header length
_SPEC = struct.Struct("<HIIBBBBB")  # codec version, rows, columns, samples, BA, BS, PR, planar
_ENTRY_V1 = struct.Struct("<QIBBII")  # offset, length, mode, depth, payload CRC, frame CRC
_ENTRY = struct.Struct("<QIBBIII")  # version 2 adds the packing table length
_FOOTER = struct.Struct("<QII4s")  # index offset, frame count, index CRC, end magic
_CRC = struct.Struct("<I")
_MAX_HEADER = 4096
_MAX_NAME = 64
# A frame coded against the previous one needs it decoded first, and that one perhaps its own:
# chains are cut here, so that any frame decodes with at most this many others.
MAX_REFERENCE_CHAIN = 7


@dataclass(frozen=True, slots=True)
class FrameEntry:
    offset: int  # from the start of the container: the packing table, then the payload
    length: int  # of the payload
    record: Preprocessing
    payload_crc: int  # over the packing table and the payload
    frame_crc: int
    table_length: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.table_length + self.length


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One frame as the container stores it: the codec payload and how to undo the preprocessing."""

    payload: bytes
    record: Preprocessing

    @property
    def table(self) -> bytes:
        return self.record.packing.to_bytes() if self.record.packing is not None else b""


def encode_frame(codec: FrameCodec, frame: npt.NDArray[np.integer], spec: PixelSpec, *,
                 pack: bool = False) -> EncodedFrame:
    """Preprocess and encode one frame (checked against `spec`), without verifying it."""
    coded, record = preprocess.forward(frame, spec, pack=pack)
    return encode_preprocessed(codec, coded, record, spec)


def encode_preprocessed(codec: FrameCodec, coded: npt.NDArray[np.unsignedinteger], record: Preprocessing,
                        spec: PixelSpec, *, reference: npt.NDArray[np.unsignedinteger] | None = None
                        ) -> EncodedFrame:
    """Encode a frame `preprocess.forward` already mapped (so several codecs can share one mapping).
    A `reference` (the previous frame, mapped alike) goes to a codec that can use one."""
    coding = preprocess.coding_spec(spec, record)
    try:
        if reference is not None and _can_reference(codec):
            payload = bytes(cast(ReferencingCodec, codec).encode(coded, coding, reference=reference))
        else:
            payload = bytes(codec.encode(coded, coding))
    except CodecError:
        raise
    except Exception as exc:  # native libraries raise whatever they like
        raise CodecError(f"{codec.codec_id}/{codec.bitstream_version} failed to encode "
                         f"({record.describe()}): {exc}") from exc
    return EncodedFrame(payload, record)


def references_previous(codec: FrameCodec, payload: bytes) -> bool:
    """Whether `payload`, written by `codec`, was coded against the frame before it."""
    return _can_reference(codec) and cast(ReferencingCodec, codec).references(payload)


def decode_payload(codec: FrameCodec, payload: bytes, coding: PixelSpec,
                   reference: npt.NDArray[np.unsignedinteger] | None = None) -> npt.NDArray[np.unsignedinteger]:
    """`codec`'s decode of `payload`, with the `reference` frame it was coded against, if any."""
    if reference is not None and _can_reference(codec):
        return cast(ReferencingCodec, codec).decode(payload, coding, reference=reference)
    return codec.decode(payload, coding)


def _can_reference(codec: FrameCodec) -> bool:
    return codec.capabilities.reference_frames and isinstance(codec, ReferencingCodec)


def may_reference(record: Preprocessing, previous: Preprocessing) -> bool:
    """Whether a frame mapped by `record` may be coded against one mapped by `previous`: the same
    mapping, and neither packed (the ranks of two frames are on different scales)."""
    return (record.packing is None and previous.packing is None
            and (record.mode, record.depth) == (previous.mode, previous.depth))


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

    def __init__(self, fp: BinaryIO, codec: FrameCodec, spec: PixelSpec, *, verify: bool = True,
                 pack: bool = False) -> None:
        """`verify=False` only for callers that decode the finished container themselves before
        trusting it (the stored form is then what gets checked, not an in-memory copy).
        `pack` applies histogram packing to every frame whose values it can renumber."""
        reasons = codec.capabilities.unsupported_reasons(spec)
        if reasons:
            raise UnsupportedPixelSpec(f"{codec.codec_id} cannot code this pixel spec: " + "; ".join(reasons))
        self._fp, self._codec, self._spec = fp, codec, spec
        self._verify, self._pack = verify, pack
        self._entries: list[FrameEntry] = []
        # For a codec that can predict a frame from the previous one: that frame as coded, how it
        # was mapped, and how many frames its decode needs before it.
        self._referencing = _can_reference(codec)
        self._previous: tuple[npt.NDArray[np.unsignedinteger], Preprocessing] | None = None
        self._chain = 0
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

    def add_frame(self, frame: npt.NDArray[np.integer], encoded: EncodedFrame | None = None) -> None:
        """Preprocess, encode, decode again and compare; write the payload only if it is exact.

        `encoded` is this frame already encoded with this writer's codec (by the mode decision),
        so it is not encoded twice; it is verified all the same. A codec that can predict a frame
        from the previous one is offered it (within MAX_REFERENCE_CHAIN).
        """
        if self._finished:
            raise CodecError("the container is already finished")
        self._spec.check_frame(frame)
        frame = np.ascontiguousarray(frame)
        coded: npt.NDArray[np.unsignedinteger] | None = None
        try:
            if encoded is None:
                coded, record = preprocess.forward(frame, self._spec, pack=self._pack)
                encoded = encode_preprocessed(self._codec, coded, record, self._spec,
                                              reference=self._reference_for(record))
            referenced = references_previous(self._codec, encoded.payload)
            if referenced and self._reference_for(encoded.record) is None:
                raise VerificationFailed("a frame refers to a previous frame it may not use")
            if self._verify:
                self._check(encoded, frame, self._previous[0] if referenced and self._previous else None)
        except CodecError as exc:
            # A blob missing a frame must never be finished as if it were whole.
            self._failed = str(exc)
            raise
        if self._referencing:
            if coded is None and encoded.record.packing is None:
                coded = preprocess.forward(frame, self._spec)[0]
            self._previous = (coded, encoded.record) if coded is not None and encoded.record.packing is None else None
            self._chain = self._chain + 1 if referenced else 0
        table = encoded.table
        self._entries.append(FrameEntry(self._written, len(encoded.payload), encoded.record,
                                        _crc(table + encoded.payload), _crc(frame), len(table)))
        self._write(table + encoded.payload)

    def _reference_for(self, record: Preprocessing) -> npt.NDArray[np.unsignedinteger] | None:
        """The previous frame as coded, if a frame mapped by `record` may be predicted from it:
        same mapping, neither packed (ranks of two frames are on different scales), chain not full."""
        if not self._referencing or self._previous is None or self._chain >= MAX_REFERENCE_CHAIN:
            return None
        previous, previous_record = self._previous
        return previous if may_reference(record, previous_record) else None

    def _check(self, encoded: EncodedFrame, frame: npt.NDArray[np.integer],
               reference: npt.NDArray[np.unsignedinteger] | None) -> None:
        record = encoded.record
        coding = preprocess.coding_spec(self._spec, record)
        codec_name = f"{self._codec.codec_id}/{self._codec.bitstream_version}"
        try:
            decoded = decode_payload(self._codec, encoded.payload, coding, reference)
            restored = preprocess.inverse(np.asarray(decoded).astype(coding.dtype, copy=False), record, self._spec)
        except Exception as exc:
            raise VerificationFailed(f"{codec_name} cannot decode its own output ({record.describe()}): {exc}") from exc
        if restored.dtype != frame.dtype or restored.shape != frame.shape or not np.array_equal(restored, frame):
            raise VerificationFailed(f"{codec_name} did not round-trip the frame exactly ({record.describe()})")

    def finish(self) -> int:
        """Write the frame index and footer; return the container's total size in bytes."""
        if self._finished:
            raise CodecError("the container is already finished")
        if self._failed is not None:
            raise CodecError(f"a frame failed, the container cannot be finished: {self._failed}")
        index_offset = self._written
        index = b"".join(
            _ENTRY.pack(e.offset, e.length, int(e.record.mode), e.record.depth, e.payload_crc, e.frame_crc,
                        e.table_length)
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
        self._header_length, self.format_version, self.codec_id, self.codec_version, self.spec = self._read_header()
        self._entries = self._read_index()
        self.codec: FrameCodec = (registry or default_registry()).get(self.codec_id, self.codec_version)
        self._last: tuple[int, npt.NDArray[np.unsignedinteger], Preprocessing] | None = None

    @property
    def frame_count(self) -> int:
        return len(self._entries)

    def preprocessing(self, index: int) -> Preprocessing:
        """How frame `index` was preprocessed, its packing table included (read and checked)."""
        return self.encoded(index).record

    def encoded(self, index: int) -> EncodedFrame:
        """The stored frame: its codec payload and preprocessing record, CRC-checked."""
        entry = self._entry(index)
        data = self._read_at(entry.offset, entry.table_length + entry.length)
        if _crc(data) != entry.payload_crc:
            raise CorruptBitstream(f"frame {index}: payload checksum mismatch")
        record = entry.record
        if entry.table_length:
            record = preprocess.parse_record(record.mode, record.depth, data[:entry.table_length])
        return EncodedFrame(data[entry.table_length:], record)

    def payload(self, index: int) -> bytes:
        """The codec's payload for one frame, CRC-checked."""
        return self.encoded(index).payload

    def standard_codestream(self, index: int) -> bytes | None:
        """The payload if it is, as is, a frame for the codec's DICOM transfer syntax, else None.

        True when the coded values are the stored values (unsigned, bits above Bits Stored clear,
        not packed): the gateway may then send it without decoding. Signed frames are stored
        offset and frames with overlay bits as full words, which a standard decoder would not give
        back as stored. The transfer syntax's own rules (e.g. PS3.5 8.2.3 photometric
        interpretations) stay the caller's to check.
        """
        entry = self._entry(index)
        record = entry.record
        if (self.codec.transfer_syntax_uid is None or record.mode is not Mode.DEPTH or record.depth < 2
                or entry.table_length):
            return None
        return self.payload(index)

    def frame(self, index: int) -> npt.NDArray[np.integer]:
        """Frame `index`, decoded and checked; a frame coded against earlier ones decodes them
        first (the last frame decoded is kept, so reading in order decodes each frame once)."""
        entry = self._entry(index)
        if self._last is not None and self._last[0] == index:
            decoded, record = self._last[1], self._last[2]
        else:
            # Back to a frame that needs no other, or whose reference was just decoded.
            start = index
            while (start > 0 and not (self._last is not None and self._last[0] == start - 1)
                   and references_previous(self.codec, self.payload(start))):
                start -= 1
            for number in range(start, index + 1):
                decoded, record = self._decoded(number)
        frame = np.ascontiguousarray(preprocess.inverse(decoded, record, self.spec))
        if np.may_share_memory(frame, decoded):
            frame = frame.copy()  # the kept frame is the next one's reference: no caller may change it
        if _crc(frame) != entry.frame_crc:
            raise CorruptBitstream(f"frame {index}: decoded pixels do not match their stored checksum")
        return frame

    def _decoded(self, index: int) -> tuple[npt.NDArray[np.unsignedinteger], Preprocessing]:
        """Frame `index` as its codec returns it, with its mapping; remembered as the last one."""
        encoded = self.encoded(index)
        coding = preprocess.coding_spec(self.spec, encoded.record)
        reference = None
        if references_previous(self.codec, encoded.payload):
            previous = self._last if self._last is not None and self._last[0] == index - 1 else None
            if previous is None or not may_reference(encoded.record, previous[2]):
                raise CorruptBitstream(f"frame {index} refers to a previous frame it cannot use")
            reference = previous[1]
        try:
            decoded = np.asarray(decode_payload(self.codec, encoded.payload, coding, reference))
        except CorruptBitstream:
            raise
        except Exception as exc:
            raise CorruptBitstream(f"frame {index}: {self.codec_id} decoding failed: {exc}") from exc
        if decoded.dtype != coding.dtype or decoded.shape != coding.frame_shape:
            raise CorruptBitstream(f"frame {index}: decoded {decoded.dtype}{decoded.shape}, "
                                   f"expected {coding.dtype}{coding.frame_shape}")
        self._last = (index, decoded, encoded.record)
        return decoded, encoded.record

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

    def _read_header(self) -> tuple[int, int, str, int, PixelSpec]:
        if self._size < _PREFIX.size + _FOOTER.size:
            raise CorruptBitstream(f"{self._size} bytes is too short for a container")
        magic, version, length = _PREFIX.unpack(self._read_at(0, _PREFIX.size))
        if magic != MAGIC:
            raise CorruptBitstream("not a pixcodec container (bad magic)")
        if version not in READABLE_VERSIONS:
            raise CorruptBitstream(f"container format version {version} is not known to this release")
        if not _PREFIX.size + _CRC.size < length <= min(_MAX_HEADER, self._size - _FOOTER.size):
            raise CorruptBitstream(f"header length {length} is impossible")
        header = self._read_at(0, length)
        if _crc(header[:-_CRC.size]) != _CRC.unpack(header[-_CRC.size:])[0]:
            raise CorruptBitstream("header checksum mismatch")
        try:
            return (length, version, *_parse_header_body(header[_PREFIX.size:-_CRC.size]))
        except (struct.error, IndexError, UnicodeDecodeError, UnsupportedPixelSpec) as exc:
            raise CorruptBitstream(f"malformed header: {exc}") from exc

    def _read_index(self) -> list[FrameEntry]:
        index_offset, count, index_crc, end_magic = _FOOTER.unpack(
            self._read_at(self._size - _FOOTER.size, _FOOTER.size))
        if end_magic != END_MAGIC:
            raise CorruptBitstream("bad footer magic (truncated or unfinished container)")
        entry_format = _ENTRY if self.format_version >= 2 else _ENTRY_V1
        index_length = count * entry_format.size
        if index_offset < self._header_length or index_offset + index_length != self._size - _FOOTER.size:
            raise CorruptBitstream(f"footer index offset {index_offset} / frame count {count} do not fit the size")
        index = self._read_at(index_offset, index_length)
        if _crc(index + struct.pack("<QI", index_offset, count)) != index_crc:
            raise CorruptBitstream("frame index checksum mismatch")
        entries: list[FrameEntry] = []
        expected_offset = self._header_length
        for number, fields in enumerate(entry_format.iter_unpack(index)):
            offset, length, mode, depth, payload_crc, frame_crc, *rest = fields
            table_length = rest[0] if rest else 0
            record = preprocess.parse_record(mode, depth)  # a packing table is read with its frame
            preprocess.check_record(record, self.spec)
            entry = FrameEntry(offset, length, record, payload_crc, frame_crc, table_length)
            if offset != expected_offset or length < 1:
                raise CorruptBitstream(f"frame {number}: payload at {offset}+{length} breaks the frame sequence")
            expected_offset = entry.end
            entries.append(entry)
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
