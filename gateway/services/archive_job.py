"""Re-encoding one stored instance with its archive codec: the part that runs in an archive
worker process.

A pure function of files: the current blob in, a new blob out, written only after the dataset it
rebuilds has been checked against the SHA-256 recorded at ingest. The caller decides whether to
keep it (smaller) and swaps it in.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.instance_blob import (
    BlobFormatError,
    PixelMode,
    PixelPlan,
    read_footer,
    rebuild,
    stored_layout,
    write_instance_blob,
)
from gateway.pixels import NativeLayout
from pixcodec import CodecError, FrameCodec, default_registry
from pixcodec.decide import budget_named

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class ArchiveJob:
    blob_path: Path  # the current blob, copied out of the store
    dataset_path: Path  # scratch: the rebuilt dataset
    out_path: Path  # where the archive blob is written
    dataset_sha256: str  # recorded at ingest
    codec: str  # "auto" (the archive budget's mode decision) or a codec id


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """The archive blob written to `out_path`, or why there is none (`error` or `skip`)."""

    size: int = 0
    codec_id: str | None = None
    codec_version: int | None = None
    candidate: str | None = None  # the archive budget's winner, when it decided
    encode_seconds: float = 0.0
    verify_seconds: float = 0.0
    skip: str | None = None  # not re-encodable (not a pixcodec blob): not an error, not retried
    error: str | None = None


def lower_priority(niceness: int) -> None:
    """Archive workers yield the CPU to ingest and retrieval (both in other processes)."""
    if niceness > 0:
        os.nice(niceness)


def run_job(job: ArchiveJob) -> ArchiveResult:
    """Every failure comes back as a result (they pickle cleanly; no exception crosses)."""
    try:
        return _reencode(job)
    except (BlobFormatError, CodecError, ValueError, OSError) as exc:
        return ArchiveResult(error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a native codec may raise anything; the instance stays as it is
        return ArchiveResult(error=f"{type(exc).__name__}: {exc}")


def _reencode(job: ArchiveJob) -> ArchiveResult:
    with job.blob_path.open("rb") as fp:
        footer, shell_start = read_footer(fp)
        if footer.pixel_mode is not PixelMode.PIXCODEC:
            return ArchiveResult(skip=f"pixels stored as {footer.pixel_mode.value}, not by a codec")
        if footer.dataset_sha256 != job.dataset_sha256:
            raise BlobFormatError("blob footer SHA-256 differs from the index")
        layout = stored_layout(fp, footer, shell_start)
        with job.dataset_path.open("wb") as dataset:
            rebuild(fp, dataset.write)  # checks the rebuilt bytes against the recorded SHA-256
    plan = _plan(layout, job.codec)
    started = time.perf_counter()
    with job.dataset_path.open("rb") as src, job.out_path.open("wb") as out:
        written = write_instance_blob(
            out,
            src,
            dataset_offset=0,
            dataset_length=footer.dataset_length,
            dataset_sha256=job.dataset_sha256,
            pixel_value=(footer.prefix_length, footer.prefix_length + footer.pixel_value_length),
            plan=plan,
        )
    encoded = time.perf_counter()
    with job.out_path.open("rb") as fp:
        rebuild(fp, lambda _chunk: None)  # bit-exact or BlobFormatError: never swapped in
    verified = time.perf_counter()
    if written.codec_id is None or written.codec_version is None:
        raise BlobFormatError("archive blob without a codec")
    return ArchiveResult(
        size=job.out_path.stat().st_size,
        codec_id=written.codec_id,
        codec_version=written.codec_version,
        candidate=written.extra.get("candidate"),
        encode_seconds=encoded - started,
        verify_seconds=verified - encoded,
    )



def _plan(layout: NativeLayout, codec: str) -> PixelPlan:
    if codec == AUTO:
        return PixelPlan(PixelMode.PIXCODEC, layout, budget=budget_named("archive"))
    return PixelPlan(PixelMode.PIXCODEC, layout, codec=_latest(codec))


def _latest(codec_id: str) -> FrameCodec:
    """The newest bitstream version of a codec id (rules name codecs without a version)."""
    registry = default_registry()
    versions = [version for key, version in registry.keys() if key == codec_id]
    if not versions:
        raise CodecError(f"no codec {codec_id!r} is registered")
    return registry.get(codec_id, max(versions))
