"""The strict structure walk: pixel element offsets agree with pydicom on every corpus file, and
any truncation of a dataset is detected."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO

from gateway import syntaxes
from gateway.dataset_layout import walk_dataset
from gateway.errors import CannotUnderstand
from tests.conftest import CorpusFile


def _dataset_region(f: CorpusFile) -> tuple[bytes, int, str]:
    raw = f.path.read_bytes()
    if f.needs_force:
        return raw, (0 if raw[128:132] != b"DICM" else 132), str(pydicom.uid.ImplicitVRLittleEndian)
    meta = pydicom.dcmread(f.path, stop_before_pixels=True).file_meta
    return raw, 132 + 12 + int(meta.FileMetaInformationGroupLength), str(meta.TransferSyntaxUID)


def test_pixel_element_found_where_pydicom_finds_it(corpus: list[CorpusFile]) -> None:
    checked = 0
    for f in corpus:
        raw, start, syntax = _dataset_region(f)
        if syntax == syntaxes.DEFLATED:
            continue
        implicit, little = syntaxes.encoding(syntax)
        pixel = walk_dataset(raw, start, len(raw), implicit_vr=implicit, little_endian=little)
        assert (pixel is not None) == f.entry["has_pixel_data"], f.relpath
        if pixel is None:
            continue
        fp = DicomBytesIO(raw[start:])
        fp.is_little_endian, fp.is_implicit_VR = little, implicit
        ds = pydicom.dcmread(f.path, force=True)
        value = ds.get(pixel.tag)
        assert value is not None, f.relpath
        assert pixel.encapsulated == f.entry["encapsulated"], f.relpath
        assert raw[start + pixel.value_start : start + pixel.value_end].startswith(
            bytes(value.value)[:64]) or pixel.encapsulated, f.relpath
        if not pixel.encapsulated:
            assert pixel.value_length == len(value.value), f.relpath
        checked += 1
    assert checked > 200


@pytest.mark.parametrize("rel", [
    "ct/pancreas_ct_philips_series/slice_001.dcm",  # implicit VR
    "ct/wg04_ct1_explicit_big_endian.dcm",  # big endian
    "seg/ispy1_seg_undefined_length.dcm",  # undefined-length sequences
    "ct/tcia_explicit_vr_un_j2k_lossless.dcm",  # VR UN, encapsulated
])
def test_every_truncation_is_detected(corpus: list[CorpusFile], rel: str) -> None:
    f = next(c for c in corpus if c.relpath == rel)
    raw, start, syntax = _dataset_region(f)
    implicit, little = syntaxes.encoding(syntax)
    size = len(raw) - start
    cuts = sorted({*range(1, min(size, 4000), 7), *range(size - 3000, size, 13), size // 2})
    full = walk_dataset(raw, start, len(raw), implicit_vr=implicit, little_endian=little)
    assert full is not None
    undetected = []
    for cut in cuts:
        try:
            pixel = walk_dataset(raw, start, start + cut, implicit_vr=implicit, little_endian=little)
        except CannotUnderstand:
            continue
        # A cut exactly between two top-level elements before Pixel Data leaves a well-formed
        # dataset without pixels: the ingest check "image SOP class without Pixel Data" refuses it.
        undetected.append(cut)
        assert pixel is None and cut <= full.element_start
    assert len(undetected) < len(cuts) // 10


def test_garbage_is_not_a_dataset() -> None:
    import random

    rng = random.Random(7)
    for _ in range(50):
        junk = bytes(rng.randrange(256) for _ in range(2000))
        with pytest.raises(CannotUnderstand):
            walk_dataset(junk, 0, len(junk), implicit_vr=False, little_endian=True)
