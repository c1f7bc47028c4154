"""Preparing one retrieved instance for its C-STORE sub-operation: the part that runs in a codec
worker process.

It is a pure function of the blob's bytes: rebuild (decoding the stored frames), pass the stored
frames through, or decode to native, and return the dataset bytes in the chosen syntax. In a worker
process it runs beside the network thread instead of contending with it for the GIL, and a native
decoder that crashes costs a worker, not the service.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from gateway.instance_blob import BlobFormatError
from gateway.services.rebuild import RebuildError, rebuild_checked
from gateway.services.transcode import Mode, TranscodeError, encoded, parse, passthrough, to_native
from pixcodec import CodecError
from storage.records import StoredInstance


@dataclass(frozen=True, slots=True)
class Candidate:
    syntax: str
    mode: Mode


@dataclass(frozen=True, slots=True)
class RetrieveJob:
    stored: StoredInstance
    blob: bytes
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class RetrieveResult:
    """The dataset bytes in `syntax` (no File Meta; deflated if `syntax` is), or why there are none."""

    data: bytes | None
    syntax: str | None = None
    mode: Mode | None = None
    error: str | None = None


def run_job(job: RetrieveJob) -> RetrieveResult:
    """The first candidate that works; a failure (never an exception) when none does."""
    if not job.candidates:
        return RetrieveResult(None, error="no accepted presentation context for its SOP class")
    stored = job.stored
    rebuilt: bytes | None = None
    try:
        for candidate in job.candidates:
            if candidate.mode is Mode.PASSTHROUGH:
                dataset = passthrough(io.BytesIO(job.blob), received=stored.transfer_syntax_uid,
                                      syntax=candidate.syntax)
                if dataset is None:
                    continue  # not allowed or not possible for these frames: decode instead
                return RetrieveResult(encoded(dataset, candidate.syntax), candidate.syntax, candidate.mode)
            if rebuilt is None:
                sink = io.BytesIO()
                rebuild_checked(io.BytesIO(job.blob), stored, sink.write)
                rebuilt = sink.getvalue()
            if candidate.mode is Mode.ORIGINAL:
                return RetrieveResult(rebuilt, candidate.syntax, candidate.mode)
            native = to_native(parse(rebuilt, stored.transfer_syntax_uid), stored.transfer_syntax_uid)
            return RetrieveResult(encoded(native, candidate.syntax), candidate.syntax, candidate.mode)
    except (RebuildError, BlobFormatError, CodecError, TranscodeError, OSError) as exc:
        return RetrieveResult(None, error=str(exc) or type(exc).__name__)
    return RetrieveResult(None, error="no accepted transfer syntax can carry it")
