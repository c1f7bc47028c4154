"""Every codec through the container over a matrix of pixel specs, and JPEG-LS against pydicom."""

from __future__ import annotations

import concurrent.futures
import io
import multiprocessing
import pickle

import numpy as np
import pytest

from pixcodec import (
    JPEG_LS_LOSSLESS_UID,
    ContainerReader,
    ContainerWriter,
    FrameCodec,
    JpegLsCodec,
    Mode,
    PixelSpec,
    UnsupportedPixelSpec,
    ZstdCodec,
    default_registry,
)

from .helpers import clean_frame, jpeg_ls_dataset, junk_frame, make_spec, round_trip, smooth_frame

CODECS: list[FrameCodec] = [JpegLsCodec(), ZstdCodec()]
SHAPES = [(1, 1), (1, 23), (17, 1), (5, 7), (33, 20)]
DEPTHS = [(8, stored) for stored in range(1, 9)] + [(16, stored) for stored in range(1, 17)]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.codec_id)
@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize(("allocated", "stored"), DEPTHS, ids=lambda v: str(v))
def test_spec_matrix_round_trip(codec: FrameCodec, samples: int, signed: bool, allocated: int, stored: int) -> None:
    rng = np.random.default_rng(allocated * 1000 + stored * 10 + samples + signed)
    for rows, columns in SHAPES:
        spec = make_spec(rows, columns, samples, allocated, stored, signed)
        frames = [clean_frame(spec, rng), smooth_frame(spec), junk_frame(spec, rng)]
        reader = round_trip(codec, spec, frames)
        clean_mode = Mode.OFFSET if signed else Mode.DEPTH
        assert reader.preprocessing(0).mode is clean_mode
        assert reader.preprocessing(1).mode is clean_mode
        junk_mode = Mode.RAW if stored < allocated else clean_mode
        assert reader.preprocessing(2).mode is junk_mode


def test_zstd_takes_32_bit_and_four_samples() -> None:
    rng = np.random.default_rng(5)
    for signed in (False, True):
        spec = PixelSpec(rows=10, columns=10, samples_per_pixel=1, bits_allocated=32, bits_stored=32,
                         signed=signed, photometric="MONOCHROME2")
        round_trip(ZstdCodec(), spec, [clean_frame(spec, rng), junk_frame(spec, rng)])
    cmyk = PixelSpec(rows=3, columns=4, samples_per_pixel=4, bits_allocated=8, bits_stored=8, signed=False,
                     photometric="CMYK")
    round_trip(ZstdCodec(), cmyk, [clean_frame(cmyk, rng)])


def test_opaque_bytes_through_zstd() -> None:
    data = np.frombuffer(bytes(range(256)) * 300 + b"\x01", dtype=np.uint8).reshape(1, -1)
    spec = PixelSpec.for_bytes(data.shape[1])
    assert default_registry().get("zstd", 1).capabilities.unsupported_reasons(spec) == []
    round_trip(ZstdCodec(), spec, [data])


def test_jpeg_ls_refuses_what_it_cannot_code() -> None:
    spec = PixelSpec(rows=2, columns=2, samples_per_pixel=1, bits_allocated=32, bits_stored=32, signed=False,
                     photometric="MONOCHROME2")
    with pytest.raises(UnsupportedPixelSpec, match=r"\(0028,0100\) Bits Allocated 32"):
        ContainerWriter(io.BytesIO(), JpegLsCodec(), spec)
    with pytest.raises(UnsupportedPixelSpec, match=r"\(0028,0011\) Columns 70000 > 65535"):
        ContainerWriter(io.BytesIO(), JpegLsCodec(), PixelSpec.for_bytes(70_000))
    # Called directly, codecs take only the preprocessed (unsigned) frames.
    with pytest.raises(UnsupportedPixelSpec, match="Pixel Representation 1"):
        JpegLsCodec().encode(np.zeros((2, 2), np.int16), make_spec(2, 2, signed=True))  # type: ignore[arg-type]


def test_jpeg_ls_codestream_is_plain_with_the_real_precision() -> None:
    spec = make_spec(16, 16, stored=12)
    stream = JpegLsCodec().encode(smooth_frame(spec).view(np.uint16), spec)
    assert stream[:4] == b"\xff\xd8\xff\xf7"  # SOI then SOF55 directly: no SPIFF (APP8) header
    assert stream[6] == 12  # SOF55 sample precision P, after its 2-byte length
    assert stream[-2:] == b"\xff\xd9"


@pytest.mark.parametrize(
    ("rows", "columns", "samples", "allocated", "stored"),
    [(1, 1, 1, 8, 8), (5, 7, 1, 8, 3), (64, 48, 1, 16, 12), (33, 20, 1, 16, 16), (31, 17, 1, 16, 8),
     (40, 30, 3, 8, 8), (9, 11, 3, 16, 10)],
)
def test_jpeg_ls_payload_decodes_with_pydicom(rows: int, columns: int, samples: int, allocated: int,
                                               stored: int) -> None:
    spec = make_spec(rows, columns, samples, allocated, stored)
    frames = [smooth_frame(spec), clean_frame(spec, np.random.default_rng(rows))]
    reader = round_trip(JpegLsCodec(), spec, frames)
    assert reader.codec.transfer_syntax_uid == JPEG_LS_LOSSLESS_UID
    streams = [reader.standard_codestream(i) for i in range(2)]
    assert all(stream is not None for stream in streams)
    pixels = jpeg_ls_dataset([s for s in streams if s is not None], spec).pixel_array
    assert np.array_equal(pixels.reshape(2, *spec.frame_shape), np.stack(frames))


def test_standard_codestream_only_when_the_values_are_the_stored_ones() -> None:
    rng = np.random.default_rng(1)
    spec = make_spec(8, 8, stored=12)
    reader = round_trip(JpegLsCodec(), spec, [clean_frame(spec, rng), junk_frame(spec, rng)])
    assert reader.standard_codestream(0) is not None
    assert reader.standard_codestream(1) is None  # coded as full 16-bit words
    signed = make_spec(8, 8, stored=12, signed=True)
    assert round_trip(JpegLsCodec(), signed, [clean_frame(signed, rng)]).standard_codestream(0) is None
    assert round_trip(ZstdCodec(), spec, [clean_frame(spec, rng)]).standard_codestream(0) is None


def _encode_in_worker(frame: np.ndarray, spec: PixelSpec, codec: FrameCodec) -> bytes:
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, codec, spec)
    writer.add_frame(frame)
    writer.finish()
    return buffer.getvalue()


def test_codecs_work_from_a_worker_process() -> None:
    registry = default_registry()
    assert pickle.loads(pickle.dumps(registry)).keys() == registry.keys()
    spec = make_spec(64, 64, stored=12, signed=True)
    frame = smooth_frame(spec)
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        blobs = list(pool.map(_encode_in_worker, [frame, frame], [spec, spec], list(CODECS)))
    for blob, codec in zip(blobs, CODECS):
        reader = ContainerReader(io.BytesIO(blob))
        assert reader.codec_id == codec.codec_id
        assert np.array_equal(reader.frame(0), frame)
