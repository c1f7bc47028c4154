"""A stored instance as a dataset in a chosen transfer syntax, for C-STORE sub-operations.

Three ways, from cheapest and most faithful down:

- ORIGINAL: the blob rebuilt as received, parsed without decoding a value.
- PASSTHROUGH: the blob's pixcodec frames sent as they are, encapsulated in the standard syntax
  of their codec (only when ContainerReader vouches for every frame and PS3.5 allows the pixel
  description in that syntax); every other element is the received one.
- DECODED: native little endian. The rebuild already turns pixcodec frames back into the
  received native words; data received encapsulated is decoded by pydicom's pixel handlers.
"""

from __future__ import annotations

import enum
import io
import logging
import zlib
from collections.abc import Mapping
from typing import IO, BinaryIO, cast

import zstandard
from pydicom import uid
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from gateway import syntaxes
from gateway.instance_blob import BlobFormatError, Footer, PixelMode, Section, read_footer
from gateway.services.explicit_vr import as_explicit_little
from pixcodec import ContainerReader, PixelSpec

log = logging.getLogger(__name__)

PIXEL_DATA = 0x7FE00010


class Mode(enum.StrEnum):
    ORIGINAL = "original"
    PASSTHROUGH = "passthrough"
    DECODED = "decoded"


class TranscodeError(Exception):
    """The stored instance cannot be turned into a dataset of the wanted transfer syntax."""


# Photometric interpretations each standard lossless syntax allows for the frames pixcodec writes
# (PS3.5 8.2.3 JPEG-LS, 8.2.4 JPEG 2000, 8.2.14 HTJ2K, 8.2.16 JPEG XL, Annex G RLE). pixcodec's
# JPEG 2000 and HTJ2K frames use no multi-component transform, so colour stays RGB (YBR_RCT would
# need the reversible colour transform in the codestream). RLE colour is left out: its segments
# are colour-by-plane while the stored description says colour-by-pixel.
_MONO = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"})
PASSTHROUGH_PHOTOMETRIC: Mapping[str, frozenset[str]] = {
    uid.JPEGLSLossless: _MONO | {"RGB"},
    uid.JPEG2000Lossless: _MONO | {"RGB"},
    uid.HTJ2KLossless: _MONO | {"RGB"},
    syntaxes.JPEG_XL_LOSSLESS: frozenset({"MONOCHROME1", "MONOCHROME2", "RGB"}),
    uid.RLELossless: _MONO,
}


def passthrough_allowed(syntax: str, spec: PixelSpec) -> bool:
    """Whether frames of `spec` may be sent in `syntax` as they are (PS3.5 section 8.2)."""
    allowed = PASSTHROUGH_PHOTOMETRIC.get(syntax)
    if allowed is None or spec.photometric not in allowed:
        return False
    # Colour frames are coded sample-interleaved; a colour-by-plane description would lie.
    return spec.samples_per_pixel == 1 or spec.planar_configuration == 0


def parse(data: bytes, syntax: str) -> Dataset:
    """The dataset in `data` (as received, no File Meta), values left undecoded."""
    ts = uid.UID(syntax)
    if ts == syntaxes.DEFLATED:
        data = zlib.decompress(data, -zlib.MAX_WBITS)
    implicit, little = syntaxes.encoding(ts)
    return _read(data, implicit, little)


def _read(data: bytes, implicit: bool, little: bool) -> Dataset:
    try:
        return read_dataset(io.BytesIO(data), implicit, little)
    except (ValueError, EOFError, KeyError) as exc:
        raise TranscodeError(f"stored dataset does not parse: {exc}") from exc


def with_syntax(dataset: Dataset, syntax: str) -> Dataset:
    """`dataset` as pynetdicom sends it: File Meta naming the transfer syntax."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = uid.UID(syntax)
    meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID")
    meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID")
    dataset.file_meta = meta
    return dataset


def encoded(dataset: Dataset, syntax: str) -> bytes:
    """`dataset` written in `syntax`'s encoding (no File Meta, never deflated): the bytes that go
    out in the C-STORE sub-operation. A dataset read in implicit VR has its raw elements given
    their VRs in place on the way to explicit VR (see explicit_vr)."""
    implicit, little = syntaxes.encoding(syntax)
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    try:
        if not implicit and little and dataset.original_encoding == (True, True):
            as_explicit_little(dataset)
        write_dataset(buffer, dataset)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise TranscodeError(f"dataset cannot be encoded in {syntax}: {exc}") from exc
    return buffer.getvalue()


def to_native(dataset: Dataset, received: str) -> Dataset:
    """The dataset with native little endian pixel data, ready for `encoded` in a native syntax."""
    ts = uid.UID(received)
    if ts == uid.ExplicitVRBigEndian:
        _swap_binary(dataset)
        return dataset
    if not syntaxes.is_encapsulated(ts):
        return dataset
    native_nested_pixels(dataset, ts)
    if PIXEL_DATA not in dataset:
        return dataset
    with_syntax(dataset, ts)
    try:
        # The instance keeps its identity: it is the same object, only its encoding changes.
        dataset.decompress(generate_instance_uid=False)
    except Exception as exc:  # the pixel handlers raise whatever their backends do
        raise TranscodeError(f"pixel data cannot be decoded: {type(exc).__name__}: {exc}") from exc
    if syntaxes.is_lossy(ts):
        # PS3.3 C.7.6.1.1.5: once lossy, always flagged as lossy.
        dataset.LossyImageCompression = "01"
    return dataset


def native_nested_pixels(dataset: Dataset, received: str) -> None:
    """Decode encapsulated pixel data inside sequence items (the Icon Image Sequence of PS3.3
    F.7, and vendors' private thumbnails), which is in the received syntax: left as it is, the
    instance would carry a compressed image inside a dataset of another syntax, which peers such
    as DCMTK cannot read. A sequence whose image does not decode is dropped: icons are optional
    (Type 3) thumbnails, and a dataset no peer can parse helps nobody."""
    for tag in list(dataset.keys()):
        element = dataset[tag]
        if element.VR != "SQ" or not isinstance(element.value, Sequence):
            continue
        try:
            for item in element.value:
                if PIXEL_DATA in item and item[PIXEL_DATA].is_undefined_length:
                    _decode_item(item, received)
                native_nested_pixels(item, received)
        except TranscodeError as exc:
            log.warning("an image inside a sequence cannot be decoded, sending the instance without "
                        "that sequence", extra={"fields": {"tag": str(element.tag), "detail": str(exc)}})
            del dataset[tag]


def _decode_item(item: Dataset, received: str) -> None:
    item.file_meta = FileMetaDataset()
    item.file_meta.TransferSyntaxUID = uid.UID(received)
    try:
        item.decompress(generate_instance_uid=False)
    except Exception as exc:  # the pixel handlers raise whatever their backends do
        raise TranscodeError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        del item.file_meta


_WORD_SIZES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _swap_binary(dataset: Dataset) -> None:
    """Big endian binary values (OW, OL, OF, OD, OV) to little endian; pydicom leaves their bytes."""
    for tag in list(dataset.keys()):
        element: DataElement = dataset[tag]
        size = _WORD_SIZES.get(str(element.VR))
        if element.VR == "SQ" and isinstance(element.value, Sequence):
            for item in element.value:
                _swap_binary(item)
        elif size and isinstance(element.value, bytes) and len(element.value) % size == 0:
            raw = element.value
            element.value = b"".join(raw[i:i + size][::-1] for i in range(0, len(raw), size)) \
                if size > 2 else _swap_pairs(raw)


def _swap_pairs(raw: bytes) -> bytes:
    swapped = bytearray(raw)
    swapped[0::2], swapped[1::2] = raw[1::2], raw[0::2]
    return bytes(swapped)


def passthrough(fp: BinaryIO, received: str, syntax: str) -> Dataset | None:
    """The instance with its stored frames encapsulated in `syntax`, or None when not possible."""
    footer, shell_start = read_footer(cast(IO[bytes], fp))
    if footer.pixel_mode is not PixelMode.PIXCODEC:
        return None
    pixel_start = shell_start + footer.shell_stored_length
    try:
        reader = ContainerReader(cast(BinaryIO, Section(cast(IO[bytes], fp), pixel_start,
                                                        footer.pixel_stored_length)))
    except Exception as exc:  # pixcodec raises CodecError; a damaged section may raise more
        raise BlobFormatError(f"pixel container unreadable: {exc}") from exc
    if reader.codec.transfer_syntax_uid != syntax or not passthrough_allowed(syntax, reader.spec):
        return None
    frames: list[bytes] = []
    for index in range(reader.frame_count):
        frame = reader.standard_codestream(index)
        if frame is None:
            return None
        frames.append(frame)
    prefix, suffix = _shell(fp, footer, shell_start)
    ts = uid.UID(received)
    implicit, little = syntaxes.encoding(ts)
    dataset = read_dataset(io.BytesIO(prefix), implicit, little,
                           stop_when=lambda tag, _vr, _length: tag == PIXEL_DATA)
    if suffix:
        dataset.update(_read(suffix, implicit, little))
    if not little:
        _swap_binary(dataset)
    if syntaxes.is_encapsulated(ts) and ts != syntax:
        native_nested_pixels(dataset, ts)
    # A basic offset table only where it helps: finding the frames of a multi-frame object.
    element = DataElement(PIXEL_DATA, "OB", encapsulate(frames, has_bot=len(frames) > 1))
    element.is_undefined_length = True
    dataset[PIXEL_DATA] = element
    return dataset


def _shell(fp: BinaryIO, footer: Footer, shell_start: int) -> tuple[bytes, bytes]:
    section = cast(IO[bytes], Section(cast(IO[bytes], fp), shell_start, footer.shell_stored_length))
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(section, read_across_frames=True)
        prefix = reader.read(footer.prefix_length)
        suffix = reader.read(footer.suffix_length) if footer.suffix_length else b""
    except zstandard.ZstdError as exc:
        raise BlobFormatError(f"corrupt instance blob shell: {exc}") from exc
    if len(prefix) != footer.prefix_length or len(suffix) != footer.suffix_length:
        raise BlobFormatError("shell shorter than recorded")
    return prefix, suffix
