"""The reversible preprocessing picks the right mode per frame and is exact."""

from __future__ import annotations

import numpy as np
import pytest

from pixcodec.preprocess import Mode, coding_spec, forward, inverse

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
