"""Ingest: spool -> verified blob -> blob store -> index, and only then success.

Write order follows DESIGN.md: the blob is durable before the index row is committed, so a crash
leaves at worst an orphan blob (removed by the sweep), never an index row without its data.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from gateway.errors import DuplicateRejected, OutOfResources
from gateway.instance_blob import ROI_CODEC_ID, PixelMode
from gateway.metrics import Metrics, modality_label
from gateway.policy import HeaderFacts, PolicyRule, decide
from gateway.services.pool import CodecPool, WorkerLost
from gateway.services.prepare import Fallback, IngestJob, PreparedInstance, prepare, run_job
from gateway.services.roi_ingest import StructureMask
from gateway.services.structures import StructureLookup
from pixcodec.roi import RoiFigures
from storage.blobs.base import BlobStore, BlobStoreError
from storage.db import IndexUnavailable
from storage.index import SqlIndex
from storage.records import (
    BlobRef,
    DuplicatePolicy,
    InstanceAttrs,
    InstanceMeta,
    RecordOutcome,
    RecordResult,
    RoiRecord,
    StorageMode,
)

log = logging.getLogger(__name__)

_STORAGE_MODE = {
    PixelMode.NONE: StorageMode.NO_PIXELS,
    PixelMode.PIXCODEC: StorageMode.COMPRESSED,
    PixelMode.ROI_HYBRID: StorageMode.COMPRESSED,
}


def _roi_record(figures: RoiFigures) -> RoiRecord:
    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return RoiRecord(
        fraction=figures.roi_fraction,
        max_error_outside=figures.max_error_outside,
        psnr_db=finite(figures.psnr_db),
        psnr_outside_db=finite(figures.psnr_outside_db),
        ratio=figures.ratio,
    )


@dataclass(frozen=True, slots=True)
class StoreRequest:
    spool_path: Path
    sop_class_uid: str
    sop_instance_uid: str
    calling_ae_title: str


@dataclass(frozen=True, slots=True)
class StoreResult:
    outcome: RecordOutcome
    prepared: PreparedInstance


class IngestService:
    def __init__(
        self,
        *,
        index: SqlIndex,
        blobs: BlobStore,
        pool: CodecPool,
        metrics: Metrics,
        spool_dir: Path,
        duplicates: DuplicatePolicy,
        budget: str = "ingest",
        rules: tuple[PolicyRule, ...] = (),
        structures: StructureLookup | None = None,
    ) -> None:
        self._index, self._blobs, self._pool, self._metrics = index, blobs, pool, metrics
        self._spool_dir = spool_dir
        self._duplicates = duplicates
        self._budget = budget
        self._rules = rules
        # Only a configured ROI-hybrid rule can use what structure objects mark.
        self._structures = structures if any(rule.mode == "roi-hybrid" for rule in rules) else None

    def store(self, request: StoreRequest) -> StoreResult:
        """Store one received dataset durably; raises GatewayError with the reason it was not."""
        blob_path = self._spool_dir / f"{uuid.uuid4().hex}.blob"
        try:
            prepared = self._prepare(request, blob_path)
            ref = self._put(blob_path)
        finally:
            blob_path.unlink(missing_ok=True)
        outcome = self._record(request, prepared, ref)
        self._count(prepared, outcome)
        if outcome.result is RecordResult.REJECTED:
            raise DuplicateRejected("SOP Instance UID already stored with other content")
        return StoreResult(outcome, prepared)

    def _prepare(self, request: StoreRequest, blob_path: Path) -> PreparedInstance:
        job = IngestJob(
            spool_path=request.spool_path,
            blob_path=blob_path,
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            budget=self._budget,
            calling_ae_title=request.calling_ae_title,
            rules=self._rules,
            structures=self._structures_for(request),
        )
        try:
            return self._pool.run(run_job, job)
        except WorkerLost as exc:
            self._metrics.fallbacks.labels(Fallback.WORKER_LOST.value).inc()
            log.error("codec worker died; storing the instance as received", extra={"fields": {"error": str(exc)}})
            prepared = prepare(replace(job, budget=None))
            return replace(prepared, fallback=Fallback.WORKER_LOST, fallback_detail=str(exc))

    def _structures_for(self, request: StoreRequest) -> StructureMask | None:
        """What the study's stored SEG and RT Structure Set objects mark on this image, when the
        policy codes it ROI-hybrid. Any trouble here leaves it to the worker, which refuses what
        does not parse and codes the rest with its own region only (logged)."""
        if self._structures is None:
            return None
        try:
            header = pydicom.dcmread(request.spool_path, stop_before_pixels=True)
            policy = decide(HeaderFacts.of(header), request.calling_ae_title, self._rules)
            if policy.roi is None or policy.roi.roi_source != "auto":
                return None
            return self._structures.for_image(header)
        except (IndexUnavailable, InvalidDicomError, OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            log.warning("segmentations and structure sets of the study not looked up",
                        extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            return None

    def _put(self, blob_path: Path) -> BlobRef:
        try:
            return self._blobs.put_file(blob_path)
        except BlobStoreError as exc:
            raise OutOfResources(f"blob store unavailable: {exc}") from exc

    def _record(self, request: StoreRequest, prepared: PreparedInstance, ref: BlobRef) -> RecordOutcome:
        attrs = prepared.attrs
        basics = attrs.instance
        meta = InstanceMeta(
            patient=attrs.patient,
            study=attrs.study,
            series=attrs.series,
            instance=InstanceAttrs(
                sop_instance_uid=basics.sop_instance_uid,
                sop_class_uid=basics.sop_class_uid,
                instance_number=basics.instance_number,
                transfer_syntax_uid=prepared.transfer_syntax_uid,
                specific_character_set=basics.specific_character_set,
                rows=basics.rows,
                columns=basics.columns,
                number_of_frames=basics.number_of_frames,
                bits_allocated=basics.bits_allocated,
                bits_stored=basics.bits_stored,
                photometric_interpretation=basics.photometric_interpretation,
                storage_mode=_STORAGE_MODE.get(prepared.pixel_mode, StorageMode.AS_RECEIVED),
                codec_id=prepared.codec_id,
                codec_version=prepared.codec_version,
                original_size=prepared.original_size,
                stored_size=ref.size,
                dataset_sha256=prepared.dataset_sha256,
                pixel_sha256=prepared.pixel_sha256,
                received_at=dt.datetime.now(dt.timezone.utc),
                calling_ae_title=request.calling_ae_title,
                compression_fallback=prepared.fallback.value if prepared.fallback else None,
                policy_rule=prepared.policy.rule_name if prepared.policy else None,
                policy_mode=prepared.policy.mode if prepared.policy else None,
                source_sop_instance_uid=prepared.source_sop_instance_uid,
                roi=_roi_record(prepared.roi) if prepared.roi is not None else None,
            ),
        )
        try:
            with self._metrics.timed(self._metrics.index_duration, "record"):
                outcome = self._index.record_instance(meta, ref, self._duplicates)
        except IndexUnavailable as exc:
            self._metrics.index_errors.labels("record").inc()
            self._delete(ref)
            raise OutOfResources(f"database unavailable: {exc}") from exc
        if not outcome.blob_used:
            self._delete(ref)
        return outcome

    def _delete(self, ref: BlobRef) -> None:
        """Best effort: what cannot be deleted now is an orphan for the sweep."""
        try:
            self._blobs.delete(ref)
        except BlobStoreError as exc:
            log.warning("blob left for the orphan sweep", extra={"fields": {"error": str(exc)}})

    def _count(self, prepared: PreparedInstance, outcome: RecordOutcome) -> None:
        m = self._metrics
        modality = modality_label(prepared.attrs.series.modality)
        budget = (prepared.policy.ingest_budget or "none") if prepared.policy else self._budget
        rule = prepared.policy.rule_name if prepared.policy else "none"
        m.instances.labels(modality, outcome.result.value).inc()
        if not outcome.blob_used:
            return
        codec = prepared.codec_id or "none"
        received, stored = prepared.original_size, prepared.blob_size
        m.received_bytes.labels(modality, codec).inc(received)
        m.stored_bytes.labels(modality, codec, prepared.pixel_mode.value).inc(stored)
        if stored:
            m.compression_ratio.labels(modality, rule, budget).observe(received / stored)
        if received >= stored:
            m.saved_bytes.labels(modality, rule, budget).inc(received - stored)
        else:
            m.grown_bytes.labels(modality, rule, budget).inc(stored - received)
        m.codec_input_bytes.labels(codec).inc(prepared.original_size)
        m.codec_output_bytes.labels(codec).inc(prepared.blob_size)
        m.codec_duration.labels(codec, "encode").observe(prepared.encode_seconds)
        m.codec_duration.labels(codec, "verify").observe(prepared.verify_seconds)
        if prepared.roi is not None:
            figures, rule = prepared.roi, prepared.policy.rule_name if prepared.policy else "none"
            m.roi.instances.labels(modality, rule).inc()
            m.roi.region.labels(modality).observe(figures.roi_fraction)
            # An infinite PSNR (nothing changed) has no bucket but +Inf, which is where it belongs.
            m.roi.psnr.labels(modality, "all").observe(figures.psnr_db)
            m.roi.psnr.labels(modality, "outside").observe(figures.psnr_outside_db)
        if prepared.candidate is not None and prepared.fallback is None:
            m.codec_decisions.labels(budget, prepared.candidate).inc()
        if prepared.roi_failure is Fallback.VERIFICATION_FAILED:
            # Never expected: the coder verifies every frame. The alert on this counter must fire.
            m.verification_failures.labels(ROI_CODEC_ID).inc()
        if prepared.fallback is not None and prepared.fallback is not Fallback.WORKER_LOST:
            m.fallbacks.labels(prepared.fallback.value).inc()
            if prepared.fallback is Fallback.VERIFICATION_FAILED:
                m.verification_failures.labels(prepared.planned_codec_id or codec).inc()
