"""The container: streaming, verification, and damage detection (CorruptBitstream, never a crash)."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pixcodec import (
    Capabilities,
    CodecError,
    CodecRegistry,
    CodecUnavailable,
    ContainerReader,
    ContainerWriter,
    CorruptBitstream,
    JpegLsCodec,
    PixelSpec,
    VerificationFailed,
    ZstdCodec,
    default_registry,
)
from pixcodec.container import MAGIC, MAX_REFERENCE_CHAIN
from pixcodec.pred import PredCodec

from .corpus_frames import manifest, raw_frames, spec_of
from .helpers import clean_frame, make_spec, smooth_frame


def _blob(codec: object = None, frames: int = 2, pack: bool = False) -> tuple[bytes, PixelSpec, list[np.ndarray]]:
    spec = make_spec(6, 5, stored=12, signed=True)
    rng = np.random.default_rng(3)
    data = [clean_frame(spec, rng) for _ in range(frames)]
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, codec or JpegLsCodec(), spec, pack=pack)  # type: ignore[arg-type]
    for frame in data:
        writer.add_frame(frame)
    writer.finish()
    return buffer.getvalue(), spec, data


def _read_all(blob: bytes) -> list[np.ndarray]:
    reader = ContainerReader(io.BytesIO(blob))
    return list(reader.frames())


def test_header_fields_are_read_back() -> None:
    blob, spec, data = _blob()
    assert blob.startswith(MAGIC)
    reader = ContainerReader(io.BytesIO(blob))
    assert (reader.codec_id, reader.codec_version, reader.spec, reader.frame_count) == ("jpeg-ls", 1, spec, 2)
    assert all(np.array_equal(a, b) for a, b in zip(reader.frames(), data))
    with pytest.raises(IndexError):
        reader.frame(2)


def test_container_inside_a_larger_file() -> None:
    blob, _, data = _blob()
    stream = io.BytesIO(b"prefix" + blob)
    stream.seek(6)
    assert np.array_equal(ContainerReader(stream).frame(1), data[1])


class _NonSeekable(io.RawIOBase):
    """A sink that takes at most 7 bytes per write and cannot seek, like a socket or pipe."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        chunk = bytes(memoryview(b))[:7]  # type: ignore[arg-type]
        self.data += chunk
        return len(chunk)


class _TrickleReader(io.RawIOBase):
    """A seekable raw stream whose reads return at most 5 bytes at a time."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = offset + (len(self._data) if whence == io.SEEK_END else self._pos if whence == io.SEEK_CUR else 0)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: object) -> int:
        view = memoryview(buffer).cast("B")  # type: ignore[arg-type]
        chunk = self._data[self._pos:self._pos + min(5, len(view))]
        view[:len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def test_reader_copes_with_short_reads() -> None:
    blob, _, data = _blob()
    reader = ContainerReader(_TrickleReader(blob))  # type: ignore[arg-type]
    assert all(np.array_equal(a, b) for a, b in zip(reader.frames(), data))


def test_writer_streams_without_seeking() -> None:
    spec = make_spec(20, 20, stored=10)
    frames = [smooth_frame(spec) for _ in range(3)]
    sink = _NonSeekable()
    writer = ContainerWriter(sink, ZstdCodec(), spec)  # type: ignore[arg-type]
    for frame in frames:
        writer.add_frame(frame)
    assert writer.finish() == len(sink.data)
    reader = ContainerReader(io.BytesIO(bytes(sink.data)))
    assert all(np.array_equal(a, b) for a, b in zip(reader.frames(), frames))


def test_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "blob.pxc"
    spec = make_spec(30, 40, stored=16)
    frame = smooth_frame(spec)
    with open(path, "wb") as fp:
        writer = ContainerWriter(fp, default_registry().choose_lossless(spec), spec)
        writer.add_frame(frame)
        total = writer.finish()
    assert path.stat().st_size == total
    with open(path, "rb") as fp:
        assert np.array_equal(ContainerReader(fp).frame(0), frame)


def test_zero_frames() -> None:
    blob, _, _ = _blob(frames=0)
    assert ContainerReader(io.BytesIO(blob)).frame_count == 0


def test_writer_refuses_misuse() -> None:
    spec = make_spec(2, 2)
    writer = ContainerWriter(io.BytesIO(), ZstdCodec(), spec)
    writer.add_frame(np.zeros((2, 2), np.uint16))
    writer.finish()
    with pytest.raises(CodecError, match="already finished"):
        writer.add_frame(np.zeros((2, 2), np.uint16))
    with pytest.raises(CodecError, match="already finished"):
        writer.finish()


@dataclass(frozen=True)
class _BitFlipCodec:
    """Zstd whose decoder flips one bit: a broken codec the writer must catch."""

    codec_id: str = "bitflip"
    bitstream_version: int = 1
    transfer_syntax_uid: str | None = None
    capabilities: Capabilities = ZstdCodec.capabilities

    def encode(self, frame: npt.NDArray[np.unsignedinteger], spec: PixelSpec) -> bytes:
        return ZstdCodec().encode(frame, spec)

    def decode(self, payload: bytes, spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]:
        decoded = ZstdCodec().decode(payload, spec).copy()
        decoded.flat[decoded.size // 2] ^= 1
        return decoded


@dataclass(frozen=True)
class _CrashingDecoder(_BitFlipCodec):
    def decode(self, payload: bytes, spec: PixelSpec) -> npt.NDArray[np.unsignedinteger]:
        raise RuntimeError("native decoder exploded")


@pytest.mark.parametrize("codec", [_BitFlipCodec(), _CrashingDecoder()], ids=["bit-flip", "crash"])
def test_broken_codec_fails_verification_and_the_blob_cannot_be_finished(codec: _BitFlipCodec) -> None:
    spec = make_spec(8, 8, stored=12)
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, codec, spec)
    with pytest.raises(VerificationFailed):
        writer.add_frame(smooth_frame(spec))
    assert writer.frames_written == 0
    with pytest.raises(CodecError, match="cannot be finished"):
        writer.finish()


def test_decoded_checksum_catches_a_decoder_that_goes_wrong_later() -> None:
    blob, _, _ = _blob(ZstdCodec())
    registry = CodecRegistry()
    registry.register(_BitFlipCodec(codec_id="zstd"))
    reader = ContainerReader(io.BytesIO(blob), registry=registry)
    with pytest.raises(CorruptBitstream, match="checksum"):
        reader.frame(0)


def test_unknown_codec_is_unavailable_not_corrupt() -> None:
    blob, _, _ = _blob()
    with pytest.raises(CodecUnavailable):
        ContainerReader(io.BytesIO(blob), registry=CodecRegistry())


@pytest.mark.parametrize("codec", [JpegLsCodec(), ZstdCodec()], ids=["jpeg-ls", "zstd"])
def test_every_truncation_is_corrupt(codec: object) -> None:
    blob, _, _ = _blob(codec)
    for length in range(len(blob)):
        with pytest.raises(CorruptBitstream):
            _read_all(blob[:length])


@pytest.mark.parametrize(("codec", "pack"), [(JpegLsCodec(), False), (ZstdCodec(), False), (JpegLsCodec(), True)],
                         ids=["jpeg-ls", "zstd", "jpeg-ls-packed"])
def test_every_single_byte_mutation_is_corrupt(codec: object, pack: bool) -> None:
    blob, _, _ = _blob(codec, pack=pack)
    if pack:
        assert ContainerReader(io.BytesIO(blob)).preprocessing(0).packing is not None
    for position in range(len(blob)):
        for flip in (0x01, 0x80, 0xFF):
            mutated = bytearray(blob)
            mutated[position] ^= flip
            with pytest.raises(CorruptBitstream):
                _read_all(bytes(mutated))


def test_garbage_and_appended_bytes_are_corrupt() -> None:
    blob, _, _ = _blob()
    rng = np.random.default_rng(11)
    candidates = [b"", b"\x00" * 100, MAGIC, MAGIC + b"\x01\x00" + b"\xff" * 50, blob + b"\x00", blob[:40] + blob,
                  blob * 2]
    candidates += [rng.bytes(int(n)) for n in rng.integers(1, 4000, size=50)]
    candidates += [MAGIC + rng.bytes(int(n)) for n in rng.integers(1, 4000, size=50)]
    for data in candidates:
        with pytest.raises(CorruptBitstream):
            _read_all(data)


def _reforge(blob: bytes, frame_count: int, index_offset: int) -> bytes:
    """A footer whose checksum is right but whose numbers lie."""
    body = blob[:-20]
    index = body[index_offset:] if index_offset <= len(body) else b""
    crc = zlib.crc32(index + struct.pack("<QI", index_offset, frame_count)) & 0xFFFFFFFF
    return body + struct.pack("<QII4s", index_offset, frame_count, crc, b"PXCE")


def test_consistent_checksums_with_impossible_numbers_are_corrupt() -> None:
    blob, _, _ = _blob()
    index_offset = struct.unpack("<Q", blob[-20:-12])[0]
    for count, offset in [(3, index_offset), (1, index_offset), (2**32 - 1, index_offset), (2, 0),
                          (2, 2**63), (0, len(blob) - 20)]:
        with pytest.raises(CorruptBitstream):
            _read_all(_reforge(blob, count, offset))


def _as_format_1(blob: bytes) -> bytes:
    """The same frames in format version 1 (no packing tables), as the first release wrote them."""
    header_length = struct.unpack_from("<H", blob, 10)[0]
    header = bytearray(blob[:header_length - 4])
    struct.pack_into("<H", header, 8, 1)
    header_bytes = bytes(header) + struct.pack("<I", zlib.crc32(bytes(header)) & 0xFFFFFFFF)
    index_offset, count = struct.unpack("<QI", blob[-20:-8])
    entries = [struct.unpack_from("<QIBBIII", blob, index_offset + 26 * i) for i in range(count)]
    assert all(entry[6] == 0 for entry in entries)
    index = b"".join(struct.pack("<QIBBII", *entry[:6]) for entry in entries)
    protected = index + struct.pack("<QI", index_offset, count)
    footer = struct.pack("<QII4s", index_offset, count, zlib.crc32(protected) & 0xFFFFFFFF, b"PXCE")
    return header_bytes + blob[header_length:index_offset] + index + footer


def test_format_1_containers_still_decode() -> None:
    blob, spec, frames = _blob(frames=3)
    old = _as_format_1(blob)
    assert len(old) == len(blob) - 3 * 4
    reader = ContainerReader(io.BytesIO(old))
    assert reader.format_version == 1 and reader.spec == spec
    assert all(np.array_equal(a, b) for a, b in zip(reader.frames(), frames, strict=True))
    for length in (len(old) - 1, len(old) - 21, 30):
        with pytest.raises(CorruptBitstream):
            _read_all(old[:length])


def test_packed_frames_round_trip_and_are_not_offered_as_standard_codestreams() -> None:
    spec = make_spec(40, 30, stored=16)
    frame = (smooth_frame(make_spec(40, 30, stored=10)).astype(np.uint32) * 13).astype(np.uint16)
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, JpegLsCodec(), spec, pack=True)
    writer.add_frame(frame)
    writer.finish()
    buffer.seek(0)
    reader = ContainerReader(buffer)
    record = reader.preprocessing(0)
    assert record.packing is not None and record.coded_depth < 16
    assert np.array_equal(reader.frame(0), frame)
    assert reader.standard_codestream(0) is None


class _CountingPred(PredCodec):
    """pred that counts its decodes, to see how many frames a random read costs."""

    def __init__(self) -> None:
        super().__init__()
        self.decodes = 0

    def decode(self, payload: bytes, spec: PixelSpec, *,
               reference: npt.NDArray[np.unsignedinteger] | None = None) -> npt.NDArray[np.unsignedinteger]:
        self.decodes += 1
        return super().decode(payload, spec, reference=reference)


def _cine() -> tuple[PixelSpec, list[npt.NDArray[np.integer]]]:
    """A real multi-frame object: 16 frames of a cardiac MR cine."""
    entry = next(e for e in manifest() if e["path"] == "mr/barre_mr_heart_multiframe_8bit.dcm")
    return spec_of(entry), list(raw_frames(entry, limit=entry["frames"]))


def test_frames_coded_against_the_previous_frame_read_back_in_any_order() -> None:
    spec, frames = _cine()
    sizes = {}
    for version in (1, 2):
        buffer = io.BytesIO()
        writer = ContainerWriter(buffer, PredCodec.default(bitstream_version=version), spec)
        for frame in frames:
            writer.add_frame(frame)
        sizes[version] = writer.finish()
    assert sizes[2] < 0.97 * sizes[1]  # a cine's frames are much alike

    codec = _CountingPred()
    registry = CodecRegistry()
    registry.register(codec)
    reader = ContainerReader(io.BytesIO(buffer.getvalue()), registry)
    referencing = [PredCodec.references(reader.payload(i)) for i in range(reader.frame_count)]
    assert not referencing[0] and sum(referencing) >= len(frames) // 2
    # No chain of frames that need their predecessor is longer than the bound.
    run = longest = 0
    for needs_previous in referencing:
        run = run + 1 if needs_previous else 0
        longest = max(longest, run)
    assert 0 < longest <= MAX_REFERENCE_CHAIN

    assert all(np.array_equal(a, b) for a, b in zip(reader.frames(), frames, strict=True))
    assert codec.decodes == len(frames)  # in order, each frame is decoded once
    for index in (len(frames) - 1, 3, 0, 9, 8, 9):
        codec.decodes = 0
        assert np.array_equal(reader.frame(index), frames[index])
        assert codec.decodes <= MAX_REFERENCE_CHAIN + 1


def _cine_reader(count: int) -> tuple[PixelSpec, list[npt.NDArray[np.integer]], ContainerReader]:
    """The cine's first `count` frames in a pred container, and a reader of it."""
    spec, frames = _cine()
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, PredCodec.default(), spec)
    for frame in frames[:count]:
        writer.add_frame(frame)
    writer.finish()
    return spec, frames, ContainerReader(io.BytesIO(buffer.getvalue()))


def test_the_writer_refuses_a_frame_coded_against_another_reference() -> None:
    spec, frames, reader = _cine_reader(2)
    coded_against_frame_0 = reader.encoded(1)
    assert PredCodec.references(coded_against_frame_0.payload)
    for verify in (True, False):
        first = ContainerWriter(io.BytesIO(), PredCodec.default(), spec, verify=verify)
        with pytest.raises(VerificationFailed, match="previous frame"):
            first.add_frame(frames[1], coded_against_frame_0)  # no previous frame at all
    swapped = ContainerWriter(io.BytesIO(), PredCodec.default(), spec)
    swapped.add_frame(frames[5])
    with pytest.raises(VerificationFailed, match="another reference frame"):
        swapped.add_frame(frames[1], coded_against_frame_0)
    with pytest.raises(CodecError):
        swapped.finish()


def test_changing_a_returned_frame_does_not_change_the_next_ones_reference() -> None:
    _spec, frames, reader = _cine_reader(3)
    first = reader.frame(0)
    first[:] = 0  # a caller's own use of its array
    assert PredCodec.references(reader.payload(1))
    assert np.array_equal(reader.frame(1), frames[1])
