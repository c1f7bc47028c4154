"""The reversible preprocessing picks the right mode per frame and is exact."""

from __future__ import annotations

import numpy as np
import pytest

from pixcodec import CorruptBitstream
from pixcodec.preprocess import Mode, Packing, coding_spec, forward, inverse

from .helpers import make_spec


def _check(frame: np.ndarray, spec_kwargs: dict[str, int | bool], mode: Mode, depth: int) -> np.ndarray:
    spec = make_spec(rows=frame.shape[0], columns=frame.shape[1], **spec_kwargs)  # type: ignore[arg-type]
    coded, record = forward(frame, spec)
    assert (record.mode, record.depth) == (mode, depth)
    assert coded.dtype == spec.unsigned_dtype
    assert int(coded.max()) < (1 << depth)
    assert coding_spec(spec, record).bits_stored == depth and not coding_spec(spec, record).signed
    restored = inverse(coded.copy(), record, spec)
    assert restored.dtype == frame.dtype and np.array_equal(restored, frame)
    return coded


def test_unsigned_clean_is_coded_at_bits_stored() -> None:
    frame = np.array([[0, 4095, 17]], np.uint16)
    coded = _check(frame, {"stored": 12}, Mode.DEPTH, 12)
    assert np.shares_memory(coded, frame)  # no copy for the common case


def test_unsigned_with_overlay_bit_falls_back_to_raw_words() -> None:
    _check(np.array([[0, 4095, 0x8011]], np.uint16), {"stored": 12}, Mode.RAW, 16)


def test_signed_sign_extension_is_offset() -> None:
    coded = _check(np.array([[-2048, 2047, 0, -1]], np.int16), {"stored": 12, "signed": True}, Mode.OFFSET, 12)
    assert coded.tolist() == [[0, 4095, 2048, 2047]]


def test_signed_full_depth_is_offset() -> None:
    _check(np.array([[-32768, 32767]], np.int16), {"stored": 16, "signed": True}, Mode.OFFSET, 16)


@pytest.mark.parametrize("word", [2048, -2049, 0x4000, -0x8000])
def test_signed_with_bits_beyond_the_sign_extension_falls_back(word: int) -> None:
    _check(np.array([[0, -1, word]], np.int16), {"stored": 12, "signed": True}, Mode.RAW, 16)


def test_signed_8_bit_and_unsigned_32_bit() -> None:
    _check(np.array([[-128, 127]], np.int8), {"allocated": 8, "stored": 8, "signed": True}, Mode.OFFSET, 8)
    _check(np.array([[0, 2**31]], np.uint32), {"allocated": 32, "stored": 32}, Mode.DEPTH, 32)
    _check(np.array([[-5, 2**20]], np.int32), {"allocated": 32, "stored": 24, "signed": True}, Mode.OFFSET, 24)


def test_packing_renumbers_the_used_values_and_inverts_exactly() -> None:
    spec = make_spec(rows=2, columns=4, stored=16)
    frame = np.array([[100, 700, 100, 1300], [65535, 700, 100, 1300]], np.uint16)
    coded, record = forward(frame, spec, pack=True)
    assert record.packing is not None and record.packing.values.tolist() == [100, 700, 1300, 65535]
    assert coded.tolist() == [[0, 1, 0, 2], [3, 1, 0, 2]] and record.coded_depth == 2
    assert coding_spec(spec, record).bits_stored == 2
    assert np.array_equal(inverse(coded, record, spec), frame)


def test_packing_follows_the_signed_offset() -> None:
    spec = make_spec(rows=1, columns=4, stored=12, signed=True)
    frame = np.array([[-2048, -8, 40, 2047]], np.int16)
    coded, record = forward(frame, spec, pack=True)
    assert record.mode is Mode.OFFSET and record.packing is not None and record.coded_depth == 2
    assert np.array_equal(inverse(coded, record, spec), frame)


def test_dense_values_from_zero_are_not_packed() -> None:
    spec = make_spec(rows=1, columns=4, stored=12)
    _, record = forward(np.array([[0, 1, 2, 3]], np.uint16), spec, pack=True)
    assert record.packing is None


def test_raw_32_bit_words_are_not_packed() -> None:
    spec = make_spec(rows=1, columns=2, allocated=32, stored=32)
    _, record = forward(np.array([[5, 2**31]], np.uint32), spec, pack=True)
    assert record.packing is None


def test_the_packing_table_survives_serialisation_and_refuses_damage() -> None:
    values = np.array([3, 9, 10, 4000], np.uint32)
    data = Packing(values).to_bytes()
    assert Packing.from_bytes(data, 12).values.tolist() == values.tolist()
    with pytest.raises(CorruptBitstream):
        Packing.from_bytes(data, 11)  # 4000 does not fit 11 bits
    for damaged in (data[:5], data[:-1], b"\x02" + data[1:], data[:9] + b"\xff\xff\x00\x00" + data[13:]):
        with pytest.raises(CorruptBitstream):
            Packing.from_bytes(damaged, 12)


def test_a_coded_value_beyond_the_table_is_corrupt() -> None:
    spec = make_spec(rows=1, columns=3, stored=12)
    _, record = forward(np.array([[5, 50, 500]], np.uint16), spec, pack=True)
    with pytest.raises(CorruptBitstream):
        inverse(np.array([[0, 1, 3]], np.uint16), record, spec)
