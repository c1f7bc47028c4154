"""The stored form of one received instance, and its exact rebuild.

Layout (documented in docs/instance-blob.md):

    MAGIC | shell section | pixel section | footer JSON | u32 footer length | MAGIC

The shell is the received dataset with the Pixel Data *value* cut out (its element header stays),
zstd-compressed; the pixel section holds that value verbatim, zstd-compressed, or re-encoded by a
pixcodec codec. Rebuilding streams shell prefix, pixel value, shell suffix: the received bytes.
The footer sits at the end so a blob can be written in one pass with bounded memory.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any, BinaryIO, cast

import zstandard

from gateway.pixels import NativeLayout
from pixcodec import CodecError, ContainerReader, ContainerWriter, FrameCodec, PixelSpec, roi
from pixcodec.decide import Budget, Decision, decide, probe_index

MAGIC = b"PGWBLOB1"
FORMAT_VERSION = 1
_CHUNK = 1 << 20
_FOOTER_LEN = struct.Struct("<I")
_ZSTD_LEVEL = 3
_MAX_FOOTER = 1 << 20
_FRAME_COUNT = struct.Struct("<I")
ROI_CODEC_ID = "roi-hybrid"


class BlobFormatError(Exception):
    """The blob is not a valid instance blob (corrupt, truncated, unknown version)."""


class PixelMode(enum.StrEnum):
    NONE = "none"  # no separate pixel section: the shell is the whole dataset
    VERBATIM = "verbatim"
    ZSTD = "zstd"
    PIXCODEC = "pixcodec"
    # Frames coded ROI-hybrid (pixcodec.roi) before the blob is written: exact inside each frame's
    # mask, within its bound outside. The dataset this mode rebuilds is the derived one.
    ROI_HYBRID = "roi-hybrid"


@dataclass(frozen=True, slots=True)
class LayoutRecord:
    """What the rebuild needs to turn decoded frames back into the exact value bytes."""

    dtype: str
    planar: int
    swap_pairs: bool
    samples: int
    tail_hex: str


@dataclass(frozen=True, slots=True)
class Footer:
    format: int
    dataset_length: int
    dataset_sha256: str
    prefix_length: int  # shell bytes before the pixel value
    suffix_length: int  # shell bytes after it
    shell_stored_length: int
    pixel_mode: PixelMode
    pixel_value_length: int
    pixel_stored_length: int
    codec_id: str | None = None
    codec_version: int | None = None
    layout: LayoutRecord | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Footer:
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT_VERSION:
                raise BlobFormatError(f"unknown instance blob format {raw.get('format')!r}")
            layout = LayoutRecord(**raw.pop("layout")) if raw.get("layout") else None
            raw.pop("layout", None)
            raw["pixel_mode"] = PixelMode(raw["pixel_mode"])
            return cls(layout=layout, **raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise BlobFormatError(f"invalid instance blob footer: {exc}") from exc


class Section(io.RawIOBase):
    """A window of a seekable file that looks like a whole file starting at 0."""

    def __init__(self, fp: IO[bytes], start: int, length: int | None = None) -> None:
        self._fp, self._start, self._length, self._pos = fp, start, length, 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._length is None

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            if self._length is None:
                self._fp.seek(0, io.SEEK_END)
                offset += self._fp.tell() - self._start
            else:
                offset += self._length
        self._pos = max(0, offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = len(view)
        if self._length is not None:
            n = max(0, min(n, self._length - self._pos))
        self._fp.seek(self._start + self._pos)
        data = self._fp.read(n)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def write(self, data: Any) -> int:
        self._fp.seek(self._start + self._pos)
        n = self._fp.write(data)
        self._pos += n
        return n


def copy_range(src: IO[bytes], start: int, length: int, sink: Callable[[bytes], Any]) -> None:
    src.seek(start)
    left = length
    while left > 0:
        chunk = src.read(min(_CHUNK, left))
        if not chunk:
            raise BlobFormatError("unexpected end of data")
        sink(chunk)
        left -= len(chunk)


@dataclass(frozen=True, slots=True)
class PixelPlan:
    """How the pixel value of one dataset is to be stored.

    For PIXCODEC, either a `budget` (the mode decision picks the codec on a probe frame) or a
    fixed `codec`. For ROI_HYBRID, `roi_frames` holds each frame already coded by pixcodec.roi;
    the source's pixel value must be exactly their decoded frames (plus the layout's tail).
    """

    mode: PixelMode
    layout: NativeLayout | None = None
    budget: Budget | None = None
    codec: FrameCodec | None = None
    roi_frames: tuple[bytes, ...] = ()


def write_instance_blob(
    out: BinaryIO,
    src: IO[bytes],
    *,
    dataset_offset: int,
    dataset_length: int,
    dataset_sha256: str,
    pixel_value: tuple[int, int] | None,
    plan: PixelPlan,
    on_frame: Callable[[bytes, Any], None] | None = None,
) -> Footer:
    """Write the blob of the dataset at src[dataset_offset:+dataset_length] to `out`.

    `pixel_value` is the (start, end) of the pixel value relative to the dataset start, or None to
    keep the dataset whole. `on_frame(raw_bytes, frame)` sees each native frame as it is encoded.
    """
    mode = plan.mode if pixel_value is not None else PixelMode.NONE
    value_start, value_end = pixel_value if pixel_value is not None else (dataset_length, dataset_length)
    out.write(MAGIC)
    shell_start = out.tell()
    cctx = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    with cctx.stream_writer(out, closefd=False) as zw:
        copy_range(src, dataset_offset, value_start, zw.write)
        copy_range(src, dataset_offset + value_end, dataset_length - value_end, zw.write)
    shell_len = out.tell() - shell_start
    pixel_start = out.tell()
    value_len = value_end - value_start
    layout_record: LayoutRecord | None = None
    extra: dict[str, Any] = {}
    codec_id: str | None = None
    codec_version: int | None = None
    absolute = dataset_offset + value_start
    if mode is PixelMode.VERBATIM:
        copy_range(src, absolute, value_len, out.write)
    elif mode is PixelMode.ZSTD:
        with cctx.stream_writer(out, closefd=False) as zw:
            copy_range(src, absolute, value_len, zw.write)
    elif mode is PixelMode.PIXCODEC:
        layout = plan.layout
        if layout is None or (plan.budget is None and plan.codec is None):
            raise ValueError("pixcodec storage needs a layout and a budget or codec")
        decision = _decide(src, absolute, layout, plan) if plan.codec is None else None
        codec = decision.codec if decision is not None else cast(FrameCodec, plan.codec)
        # The caller rebuilds the finished blob from disk and compares it with the received bytes,
        # which checks the stored frames; decoding each one in memory as well would only cost time.
        writer = ContainerWriter(cast(BinaryIO, Section(out, pixel_start)), codec, layout.spec, verify=False,
                                 pack=decision.pack if decision is not None else False)
        probe = probe_index(layout.frames)
        # A probe payload coded against the frame before it is valid only where the writer's own
        # chain puts it: the writer codes that frame again instead.
        probe_encoded = decision.encoded if decision is not None and not decision.references_previous else None
        src.seek(absolute)
        for index in range(layout.frames):
            raw = src.read(layout.frame_nbytes)
            frame = layout.frame_from_bytes(raw)
            if on_frame is not None:
                on_frame(raw, frame)
            writer.add_frame(frame, probe_encoded if index == probe else None)
        writer.finish()
        out.seek(0, io.SEEK_END)
        tail = src.read(value_len - layout.frames_nbytes)
        layout_record = LayoutRecord(
            layout.dtype, layout.planar, layout.swap_pairs, layout.samples, tail.hex()
        )
        codec_id, codec_version = codec.codec_id, codec.bitstream_version
        if decision is not None and plan.budget is not None:
            extra = {"budget": plan.budget.name, "candidate": decision.candidate.name}
    elif mode is PixelMode.ROI_HYBRID:
        layout = plan.layout
        if layout is None or len(plan.roi_frames) != layout.frames:
            raise ValueError("roi-hybrid storage needs a layout and one coded blob per frame")
        out.write(_FRAME_COUNT.pack(layout.frames))
        for coded in plan.roi_frames:
            out.write(_FRAME_COUNT.pack(len(coded)))
            out.write(coded)
        src.seek(absolute + layout.frames_nbytes)
        tail = src.read(value_len - layout.frames_nbytes)
        layout_record = LayoutRecord(layout.dtype, layout.planar, layout.swap_pairs, layout.samples, tail.hex())
        codec_id, codec_version = ROI_CODEC_ID, roi.FORMAT_VERSION
    footer = Footer(
        format=FORMAT_VERSION,
        dataset_length=dataset_length,
        dataset_sha256=dataset_sha256,
        prefix_length=value_start,
        suffix_length=dataset_length - value_end,
        shell_stored_length=shell_len,
        pixel_mode=mode,
        pixel_value_length=value_len if mode is not PixelMode.NONE else 0,
        pixel_stored_length=out.tell() - pixel_start,
        codec_id=codec_id,
        codec_version=codec_version,
        layout=layout_record,
        extra=extra,
    )
    encoded = footer.to_json()
    out.write(encoded)
    out.write(_FOOTER_LEN.pack(len(encoded)))
    out.write(MAGIC)
    return footer


def _decide(src: IO[bytes], absolute: int, layout: NativeLayout, plan: PixelPlan) -> Decision:
    """The mode decision on the probe frame, read from the source without disturbing the copy;
    with the frame before it, so that a codec that predicts frames from the previous one is
    judged as the container will use it (a cine, a volume)."""
    budget = cast(Budget, plan.budget)
    probe = probe_index(layout.frames)
    previous = None
    if probe > 0 and any(candidate.codec.capabilities.reference_frames for candidate in budget.candidates):
        src.seek(absolute + (probe - 1) * layout.frame_nbytes)
        previous = layout.frame_from_bytes(src.read(layout.frame_nbytes))
    src.seek(absolute + probe * layout.frame_nbytes)
    frame = layout.frame_from_bytes(src.read(layout.frame_nbytes))
    # Not verified here: the caller rebuilds the whole blob from disk and compares it.
    return decide(frame, layout.spec, budget, verify=False, previous=previous)


def read_footer(fp: IO[bytes]) -> tuple[Footer, int]:
    """The footer and the offset of the shell section."""
    fp.seek(0, io.SEEK_END)
    size = fp.tell()
    tail_len = _FOOTER_LEN.size + len(MAGIC)
    if size < 2 * len(MAGIC) + _FOOTER_LEN.size:
        raise BlobFormatError("instance blob too short")
    fp.seek(0)
    if fp.read(len(MAGIC)) != MAGIC:
        raise BlobFormatError("not an instance blob (bad magic)")
    fp.seek(size - tail_len)
    trailer = fp.read(tail_len)
    if trailer[_FOOTER_LEN.size :] != MAGIC:
        raise BlobFormatError("instance blob truncated (no end marker)")
    (footer_len,) = _FOOTER_LEN.unpack(trailer[: _FOOTER_LEN.size])
    if footer_len > min(_MAX_FOOTER, size - tail_len - len(MAGIC)):
        raise BlobFormatError("instance blob footer length out of range")
    fp.seek(size - tail_len - footer_len)
    footer = Footer.from_json(fp.read(footer_len))
    if len(MAGIC) + footer.shell_stored_length + footer.pixel_stored_length + footer_len + tail_len != size:
        raise BlobFormatError("instance blob sections do not add up to its size")
    return footer, len(MAGIC)


def _native_layout(footer: Footer, spec: PixelSpec, frames: int) -> NativeLayout:
    """The layout the blob recorded, for frames of `spec`: how they turn back into value bytes."""
    record = footer.layout
    if record is None:
        raise BlobFormatError(f"{footer.pixel_mode.value} blob without a layout record")
    return NativeLayout(
        rows=spec.rows,
        columns=spec.columns,
        samples=record.samples,
        frames=frames,
        bits_allocated=spec.bits_allocated,
        dtype=record.dtype,
        planar=record.planar,
        swap_pairs=record.swap_pairs,
        spec=spec,
    )


def stored_layout(fp: IO[bytes], footer: Footer, shell_start: int) -> NativeLayout:
    """The frame layout of a pixcodec blob, as its pixel value was cut at ingest."""
    reader = ContainerReader(cast(BinaryIO, Section(fp, shell_start + footer.shell_stored_length,
                                                    footer.pixel_stored_length)))
    return _native_layout(footer, reader.spec, reader.frame_count)


def rebuild(fp: IO[bytes], sink: Callable[[bytes], Any]) -> Footer:
    """Stream the dataset exactly as received into `sink`; check its length and SHA-256.

    Raises BlobFormatError on any corruption or mismatch.
    """
    footer, shell_start = read_footer(fp)
    digest = hashlib.sha256()
    written = 0

    def emit(chunk: bytes) -> None:
        nonlocal written
        digest.update(chunk)
        written += len(chunk)
        sink(chunk)

    try:
        dctx = zstandard.ZstdDecompressor()
        shell_section = cast(IO[bytes], Section(fp, shell_start, footer.shell_stored_length))
        shell = dctx.stream_reader(shell_section, read_across_frames=True)
        _copy_stream(shell, footer.prefix_length, emit)
        _emit_pixel_value(fp, footer, shell_start + footer.shell_stored_length, emit)
        _copy_stream(shell, footer.suffix_length, emit)
    except (zstandard.ZstdError, CodecError) as exc:
        raise BlobFormatError(f"corrupt instance blob: {exc}") from exc
    if written != footer.dataset_length or digest.hexdigest() != footer.dataset_sha256:
        raise BlobFormatError("rebuilt dataset does not match the SHA-256 recorded at ingest")
    return footer


def _copy_stream(stream: Any, length: int, sink: Callable[[bytes], Any]) -> None:
    left = length
    while left > 0:
        chunk = stream.read(min(_CHUNK, left))
        if not chunk:
            raise BlobFormatError("shell shorter than recorded")
        sink(chunk)
        left -= len(chunk)


def _emit_pixel_value(fp: IO[bytes], footer: Footer, start: int, emit: Callable[[bytes], Any]) -> None:
    section = cast(IO[bytes], Section(fp, start, footer.pixel_stored_length))
    mode = footer.pixel_mode
    if mode is PixelMode.NONE:
        return
    if mode is PixelMode.VERBATIM:
        _copy_stream(section, footer.pixel_value_length, emit)
    elif mode is PixelMode.ZSTD:
        reader = zstandard.ZstdDecompressor().stream_reader(section, read_across_frames=True)
        _copy_stream(reader, footer.pixel_value_length, emit)
    elif mode is PixelMode.ROI_HYBRID:
        for frame, _mask, spec in iter_roi_frames(section):
            emit(_native_layout(footer, spec, 1).frame_to_bytes(frame))
        emit(bytes.fromhex(footer.layout.tail_hex if footer.layout else ""))
    else:
        container = ContainerReader(cast(BinaryIO, section))
        layout = _native_layout(footer, container.spec, container.frame_count)
        for frame in container.frames():
            emit(layout.frame_to_bytes(frame))
        emit(bytes.fromhex(footer.layout.tail_hex if footer.layout else ""))


def iter_roi_frames(section: IO[bytes]) -> Iterator[tuple[Any, Any, PixelSpec]]:
    """The decoded frames of a ROI-hybrid pixel section with their masks and specs; each frame is
    checked against its own checksum by the decoder."""
    (count,) = _FRAME_COUNT.unpack(_read_exactly(section, _FRAME_COUNT.size))
    for _ in range(count):
        (length,) = _FRAME_COUNT.unpack(_read_exactly(section, _FRAME_COUNT.size))
        coded = _read_exactly(section, length)
        frame, mask = roi.decode(coded)
        yield frame, mask, roi.read_header(coded).spec


def _read_exactly(section: IO[bytes], length: int) -> bytes:
    data = section.read(length)
    if len(data) != length:
        raise BlobFormatError("roi-hybrid pixel section shorter than recorded")
    return data


def roi_masks(fp: IO[bytes]) -> list[Any]:
    """The stored mask of each frame of a ROI-hybrid blob: the pixels kept exact."""
    footer, shell_start = read_footer(fp)
    if footer.pixel_mode is not PixelMode.ROI_HYBRID:
        raise BlobFormatError(f"not a ROI-hybrid blob (pixel mode {footer.pixel_mode.value})")
    section = cast(IO[bytes], Section(fp, shell_start + footer.shell_stored_length, footer.pixel_stored_length))
    return [mask for _frame, mask, _spec in iter_roi_frames(section)]


def rebuild_bytes(fp: IO[bytes]) -> bytes:
    out = io.BytesIO()
    rebuild(fp, out.write)
    return out.getvalue()
