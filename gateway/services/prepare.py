"""Turn a spooled dataset into a verified instance blob: the CPU-bound half of ingest.

Runs in a codec worker process (a native codec crash then costs one worker, not the service), or
in-process with `codec_id=None` as the fallback that never calls a native codec.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import UID

from gateway import syntaxes
from gateway.errors import (
    CannotUnderstand,
    DatasetDoesNotMatchSOPClass,
    GatewayError,
    OutOfResources,
    PixelDataInconsistent,
)
from gateway.instance_blob import BlobFormatError, Footer, PixelMode, PixelPlan, rebuild, write_instance_blob
from gateway.metadata import HeaderAttrs, extract
from gateway.pixels import native_layout
from gateway.policy import HeaderFacts, PolicyDecision, PolicyRule, decide
from gateway.services.roi_ingest import NotCoded, RoiCoded, StructureMask, code_instance
from pixcodec import CodecError, VerificationFailed
from pixcodec.roi import RoiFigures
from gateway.received import ReceivedDataset, dataset_sha256, open_received
from pixcodec.decide import budget_named

log = logging.getLogger(__name__)


class Fallback(enum.StrEnum):
    """Why pixel data that could have been compressed was kept as received (bounded label)."""

    CODEC_ERROR = "codec_error"
    VERIFICATION_FAILED = "verification_failed"
    WORKER_LOST = "worker_lost"


@dataclass(frozen=True, slots=True)
class IngestJob:
    spool_path: Path
    blob_path: Path
    sop_class_uid: str  # from the C-STORE command
    sop_instance_uid: str
    budget: str | None  # a pixcodec.decide budget name, or None: never run a native codec
    calling_ae_title: str = ""
    # The configured policy rules; the matched rule's budget replaces `budget` (unless it is None).
    rules: tuple[PolicyRule, ...] | None = None
    # What the study's stored Segmentations and RT Structure Sets mark on this image: kept exact
    # by a ROI-hybrid rule, beside its own region.
    structures: StructureMask | None = None


@dataclass(frozen=True, slots=True)
class PreparedInstance:
    attrs: HeaderAttrs
    transfer_syntax_uid: str
    pixel_mode: PixelMode
    codec_id: str | None
    codec_version: int | None
    original_size: int
    blob_size: int
    dataset_sha256: str
    pixel_sha256: str | None
    encode_seconds: float
    verify_seconds: float
    fallback: Fallback | None
    fallback_detail: str | None
    planned_codec_id: str | None  # the codec that was tried, also when it was not kept
    candidate: str | None  # the mode decision's winner (codec and settings), when it ran
    policy: PolicyDecision | None = None  # None when the job carried no rules
    # ROI-hybrid: the received instance's UID (attrs describe the derived instance) and the figures.
    source_sop_instance_uid: str | None = None
    roi: RoiFigures | None = None
    # ROI-hybrid was asked for and failed (coding error, or a blob that did not verify): the
    # received instance was stored losslessly instead.
    roi_failure: Fallback | None = None


def prepare(job: IngestJob) -> PreparedInstance:
    """Parse, check, encode, write and verify; raises GatewayError for data that must be refused."""
    received = open_received(job.spool_path)
    attrs = extract(received.header)
    _check_command_uids(attrs, job)
    policy = None
    roi_failure: Fallback | None = None
    budget = job.budget
    if job.rules is not None:
        policy = decide(HeaderFacts.of(received.header, str(received.transfer_syntax)), job.calling_ae_title, job.rules)
        budget = policy.ingest_budget if budget is not None else None
    if policy is not None and policy.roi is not None and budget is not None:
        coded, why_not, roi_failure = _roi_hybrid(received, policy, job, budget)
        stored = _store_derived(coded, received, job, policy) if coded is not None else None
        if stored is not None:
            return stored
        if coded is not None:
            why_not, roi_failure = "ROI-hybrid blob did not verify", Fallback.VERIFICATION_FAILED
        policy = replace(policy, mode="lossless", roi=None, reason=why_not)
    dataset_digest = dataset_sha256(received)  # not needed when a derived instance is stored instead
    plan, pixel_digest = _plan(received, budget)
    fallback: Fallback | None = None
    detail: str | None = None
    attempt = _Attempt()
    try:
        pixel_digest = _write_and_verify(received, job.blob_path, dataset_digest, plan, attempt) or pixel_digest
    except OSError:
        raise
    except BlobFormatError as exc:
        fallback, detail = Fallback.VERIFICATION_FAILED, str(exc)
    except Exception as exc:  # CodecError, or anything a native library raises: keep the bytes
        if plan.mode in (PixelMode.VERBATIM, PixelMode.NONE):
            raise
        fallback, detail = Fallback.CODEC_ERROR, f"{type(exc).__name__}: {exc}"
    planned = attempt.footer.codec_id if attempt.footer is not None else None
    if fallback is not None:
        log.warning("compression not used: %s (%s)", fallback.value, detail)
        plan = PixelPlan(PixelMode.VERBATIM)
        try:
            _write_and_verify(received, job.blob_path, dataset_digest, plan, attempt)
        except BlobFormatError as exc:
            raise OutOfResources(f"cannot write a verified blob: {exc}") from exc
    footer = attempt.footer
    return PreparedInstance(
        attrs=attrs,
        transfer_syntax_uid=str(received.transfer_syntax),
        pixel_mode=plan.mode,
        codec_id=footer.codec_id if footer is not None else None,
        codec_version=footer.codec_version if footer is not None else None,
        original_size=received.dataset_length,
        blob_size=job.blob_path.stat().st_size,
        dataset_sha256=dataset_digest,
        pixel_sha256=pixel_digest,
        encode_seconds=attempt.encode_seconds,
        verify_seconds=attempt.verify_seconds,
        fallback=fallback,
        fallback_detail=detail,
        planned_codec_id=planned,
        candidate=footer.extra.get("candidate") if footer is not None else None,
        policy=policy,
        roi_failure=roi_failure,
    )


def _roi_hybrid(received: ReceivedDataset, policy: PolicyDecision, job: IngestJob,
                budget: str) -> tuple[RoiCoded | None, str, Fallback | None]:
    """The derived instance, or None, why the instance is to be stored losslessly instead and,
    when that is a failure rather than a choice, which."""
    assert policy.roi is not None
    failure: Fallback | None = None
    try:
        return code_instance(received, policy.roi, _derived_path(job), budget_named(budget),
                             job.structures), "", None
    except NotCoded as exc:
        why_not = str(exc)
        log.info("ROI-hybrid not applied, storing losslessly: %s", why_not)
    except OSError:
        raise
    except Exception as exc:  # a codec, mask or pydicom failure must not cost the instance
        why_not = f"ROI-hybrid coding failed: {type(exc).__name__}"
        failure = Fallback.VERIFICATION_FAILED if isinstance(exc, VerificationFailed) else Fallback.CODEC_ERROR
        log.warning("ROI-hybrid coding failed, storing losslessly: %s: %s", type(exc).__name__, exc)
    _derived_path(job).unlink(missing_ok=True)
    return None, why_not, failure


def _derived_path(job: IngestJob) -> Path:
    return job.blob_path.with_name(job.blob_path.name + ".derived")


def _store_derived(coded: RoiCoded, received: ReceivedDataset, job: IngestJob,
                   policy: PolicyDecision) -> PreparedInstance | None:
    """Write and verify the blob of the derived instance (the received one is its source); None
    when it does not rebuild, and the received instance is then stored losslessly instead."""
    derived = coded.derived
    try:
        attrs = extract(derived.header)
        digest = dataset_sha256(derived)
        attempt = _Attempt()
        try:
            _write_and_verify(derived, job.blob_path, digest, coded.plan, attempt)
        except (BlobFormatError, CodecError) as exc:
            log.error("ROI-hybrid blob does not rebuild, storing losslessly: %s", exc)
            return None
    finally:
        derived.path.unlink(missing_ok=True)
    footer = attempt.footer
    assert footer is not None
    return PreparedInstance(
        attrs=attrs,
        transfer_syntax_uid=str(derived.transfer_syntax),
        pixel_mode=coded.plan.mode,
        codec_id=footer.codec_id,
        codec_version=footer.codec_version,
        original_size=received.dataset_length,
        blob_size=job.blob_path.stat().st_size,
        dataset_sha256=digest,
        pixel_sha256=coded.pixel_sha256,
        encode_seconds=attempt.encode_seconds,
        verify_seconds=attempt.verify_seconds,
        fallback=None,
        fallback_detail=None,
        planned_codec_id=footer.codec_id,
        candidate=None,
        policy=policy,
        source_sop_instance_uid=coded.source_sop_instance_uid,
        roi=coded.figures,
    )


@dataclass(slots=True)
class _Attempt:
    """What writing the blob did so far, kept across a fallback to the received bytes."""

    footer: Footer | None = None
    encode_seconds: float = 0.0
    verify_seconds: float = 0.0


def _check_command_uids(attrs: HeaderAttrs, job: IngestJob) -> None:
    if attrs.instance.sop_instance_uid != job.sop_instance_uid:
        raise DatasetDoesNotMatchSOPClass("SOP Instance UID differs from the command's")
    if attrs.instance.sop_class_uid != job.sop_class_uid:
        raise DatasetDoesNotMatchSOPClass("SOP Class UID differs from the command's")


def _plan(received: ReceivedDataset, budget: str | None) -> tuple[PixelPlan, str | None]:
    """How to store the pixel value, and the pixel digest when it is known without encoding."""
    pixel = received.pixel
    syntax = received.transfer_syntax
    if pixel is None and received.splittable and _needs_pixel_data(received):
        raise PixelDataInconsistent("image SOP class without Pixel Data (dataset cut short?)")
    if pixel is None:  # also every deflated dataset: one stream, kept whole
        return PixelPlan(PixelMode.NONE), None
    if pixel.encapsulated or syntaxes.is_encapsulated(syntax):
        digest = None if syntaxes.is_lossy(syntax) else _decoded_digest(received)
        return PixelPlan(PixelMode.VERBATIM), digest
    layout = native_layout(received.header, syntax, pixel)
    if budget is None:
        return PixelPlan(PixelMode.VERBATIM), None
    if layout is None:
        return PixelPlan(PixelMode.ZSTD), None
    return PixelPlan(PixelMode.PIXCODEC, layout, budget=budget_named(budget)), None


def _needs_pixel_data(received: ReceivedDataset) -> bool:
    """Image IODs require Pixel Data; a dataset cut between two elements looks well-formed."""
    sop_class = UID(str(received.header.get("SOPClassUID", "")))
    return "Image Storage" in sop_class.name or "Rows" in received.header


def _write_and_verify(
    received: ReceivedDataset,
    blob_path: Path,
    dataset_digest: str,
    plan: PixelPlan,
    attempt: _Attempt,
) -> str | None:
    """Write the blob, then rebuild it and compare with the received bytes; the pixel digest."""
    pixel = received.pixel
    digest = hashlib.sha256()

    def on_frame(_raw: bytes, frame: np.ndarray[Any, Any]) -> None:
        digest.update(frame.astype(frame.dtype.newbyteorder("<"), copy=False).tobytes())

    started = time.perf_counter()
    with received.path.open("rb") as src, blob_path.open("wb") as out:
        attempt.footer = write_instance_blob(
            out,
            src,
            dataset_offset=received.dataset_offset,
            dataset_length=received.dataset_length,
            dataset_sha256=dataset_digest,
            pixel_value=(pixel.value_start, pixel.value_end) if pixel is not None else None,
            plan=plan,
            on_frame=on_frame,
        )
    encoded = time.perf_counter()
    with blob_path.open("rb") as fp:
        rebuild(fp, lambda _chunk: None)
    attempt.encode_seconds += encoded - started
    attempt.verify_seconds += time.perf_counter() - encoded
    if plan.mode is PixelMode.PIXCODEC:
        return digest.hexdigest()
    return None


def _decoded_digest(received: ReceivedDataset) -> str | None:
    """SHA-256 of the decoded frames of lossless encapsulated data; None if it cannot be decoded."""
    from pydicom.pixels.utils import iter_pixels

    digest = hashlib.sha256()
    try:
        for frame in iter_pixels(received.path, raw=True):
            digest.update(frame.astype(frame.dtype.newbyteorder("<"), copy=False).tobytes())
    except Exception as exc:  # decoders raise anything from RuntimeError to ValueError
        log.warning("lossless encapsulated pixel data does not decode: %s", exc)
        return None
    return digest.hexdigest()


def run_job(job: IngestJob) -> PreparedInstance:
    """Worker-process entry point: every failure leaves as a GatewayError (they pickle cleanly)."""
    try:
        return prepare(job)
    except GatewayError:
        raise
    except OSError as exc:  # spool or blob file: disk full, read-only, vanished
        raise OutOfResources(f"spool I/O failed: {exc.strerror or exc}") from None
    except Exception as exc:  # anything else is data we do not understand
        raise CannotUnderstand(f"{type(exc).__name__}: {exc}") from None
