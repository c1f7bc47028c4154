"""Where the parts of a received dataset lie in its bytes, checked strictly.

pydicom reads a truncated dataset without complaint (it returns the elements it got), so the
structure is walked here first: every top-level element must end inside the data, nested sequences
must close, and the walk must end exactly at the end of the data. The walk also finds the Pixel Data
element, so that pixels can be read frame by frame from the spool file and the rest of the dataset
(the "shell") kept byte for byte.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

from gateway.errors import CannotUnderstand

PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # Pixel, Float, Double Float
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class PixelElement:
    """The top-level pixel element; offsets are relative to the start of the dataset."""

    tag: int
    vr: str | None  # None in implicit VR
    element_start: int
    value_start: int
    value_end: int  # exclusive; for encapsulated data it includes the sequence delimiter
    encapsulated: bool
    fragment_offsets: tuple[int, ...] = ()  # value offsets of each fragment item (encapsulated)

    @property
    def value_length(self) -> int:
        return self.value_end - self.value_start


class _Walker:
    def __init__(self, buf: mmap.mmap | bytes, start: int, end: int, implicit: bool, little: bool):
        self.buf, self.end, self.implicit = buf, end, implicit
        self.start = start
        self._u16 = struct.Struct("<H" if little else ">H")
        self._u32 = struct.Struct("<I" if little else ">I")
        self._tag = struct.Struct("<HH" if little else ">HH")
        self._le_u32 = struct.Struct("<I")
        self._le_tag = struct.Struct("<HH")

    def _need(self, pos: int, n: int, what: str) -> None:
        if pos + n > self.end:
            raise CannotUnderstand(
                f"dataset truncated: {what} at byte {pos - self.start} needs {n} bytes, "
                f"{max(0, self.end - pos)} left"
            )

    def _read_tag(self, pos: int, little_only: bool = False) -> int:
        self._need(pos, 4, "tag")
        unpack = self._le_tag if little_only else self._tag
        group, elem = unpack.unpack_from(self.buf, pos)
        return int((group << 16) | elem)

    def header(self, pos: int, implicit: bool, le_only: bool = False) -> tuple[int, bytes | None, int, int]:
        """(tag, vr, value length, value offset) of the element at `pos`."""
        tag = self._read_tag(pos, le_only)
        u32 = self._le_u32 if le_only else self._u32
        if tag >> 16 == 0xFFFE or implicit:
            self._need(pos, 8, "element header")
            return tag, None, u32.unpack_from(self.buf, pos + 4)[0], pos + 8
        self._need(pos, 8, "element header")
        vr = bytes(self.buf[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            self._need(pos, 12, "element header")
            return tag, vr, u32.unpack_from(self.buf, pos + 8)[0], pos + 12
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise CannotUnderstand(f"invalid VR {vr!r} at byte {pos - self.start}")
        return tag, vr, self._u16.unpack_from(self.buf, pos + 6)[0], pos + 8

    def skip_sequence(self, pos: int, implicit: bool, depth: int, le_only: bool = False) -> int:
        """Skip the items of an undefined-length sequence starting at `pos`; return the end offset."""
        if depth > _MAX_DEPTH:
            raise CannotUnderstand("sequences nested too deeply")
        while True:
            tag, _, length, value = self.header(pos, True, le_only)
            if tag == _SEQUENCE_DELIMITER:
                return value
            if tag != _ITEM:
                raise CannotUnderstand(f"expected an item at byte {pos - self.start}")
            if length != _UNDEFINED:
                self._need(value, length, "item")
                pos = value + length
                continue
            pos = value
            while True:
                tag, vr, length, value = self.header(pos, implicit, le_only)
                if tag == _ITEM_DELIMITER:
                    pos = value
                    break
                pos = self.skip_value(value, vr, length, implicit, depth + 1, le_only)

    def skip_value(
        self, value: int, vr: bytes | None, length: int, implicit: bool, depth: int, le_only: bool
    ) -> int:
        if length != _UNDEFINED:
            self._need(value, length, "element value")
            return value + length
        # An undefined-length UN holds a sequence encoded in implicit VR little endian (PS3.5 6.2.2).
        if vr == b"UN":
            return self.skip_sequence(value, True, depth, True)
        return self.skip_sequence(value, implicit, depth, le_only)

    def fragments(self, pos: int) -> tuple[tuple[int, ...], int]:
        offsets: list[int] = []
        while True:
            tag, _, length, value = self.header(pos, True)
            if tag == _SEQUENCE_DELIMITER:
                return tuple(offsets), value
            if tag != _ITEM or length == _UNDEFINED:
                raise CannotUnderstand(f"invalid encapsulated pixel data at byte {pos - self.start}")
            self._need(value, length, "pixel data fragment")
            offsets.append(value - self.start)
            pos = value + length


def walk_dataset(
    buf: mmap.mmap | bytes, start: int, end: int, *, implicit_vr: bool, little_endian: bool
) -> PixelElement | None:
    """Check the structure of the dataset in buf[start:end]; return its top-level pixel element.

    Raises CannotUnderstand naming the byte where the structure breaks.
    """
    walker = _Walker(buf, start, end, implicit_vr, little_endian)
    pixel: PixelElement | None = None
    pos = start
    while pos < end:
        tag, vr, length, value = walker.header(pos, implicit_vr)
        if tag in PIXEL_DATA_TAGS and pixel is None:
            if length == _UNDEFINED:
                offsets, value_end = walker.fragments(value)
                encapsulated = True
            else:
                walker._need(value, length, "pixel data")
                offsets, value_end, encapsulated = (), value + length, False
            pixel = PixelElement(
                tag=tag,
                vr=vr.decode("ascii") if vr else None,
                element_start=pos - start,
                value_start=value - start,
                value_end=value_end - start,
                encapsulated=encapsulated,
                fragment_offsets=offsets,
            )
            pos = value_end
            continue
        pos = walker.skip_value(value, vr, length, implicit_vr, 0, False)
    return pixel
