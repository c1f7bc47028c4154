"""Every Prometheus metric of the gateway, built on an injected registry.

Names follow the Prometheus conventions: prefix `pacsgw_`, base units, `_total` only on counters
(prometheus_client appends it), and labels with bounded values only: never a UID, a patient
identifier, a peer address or exception text.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# DICOM defined terms for (0008,0060) Modality (PS3.3 C.7.3.1.1.1); anything else is "other".
KNOWN_MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS "
    "KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN PR PT PX REG RESP "
    "RF RG RTDOSE RTIMAGE RTPLAN RTRECORD RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA "
    "XA XC".split()
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_RATIO_BUCKETS = (0.9, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 8, 12, 20, 50)


# Values of the `service` and `status_category` labels (gateway.errors.Service, status_category()).
SERVICES = ("c_echo", "c_store", "c_find", "c_get", "c_move")
STATUS_CATEGORIES = ("success", "warning", "failure", "cancel")


def modality_label(modality: str | None) -> str:
    value = (modality or "").strip().upper()
    return value if value in KNOWN_MODALITIES else "other"


@dataclass
class DimseObservation:
    """What the caller of Metrics.dimse() reports back about the request it timed."""

    status: int = 0x0000
    category: str = "success"


class Metrics:
    def __init__(
        self, registry: CollectorRegistry, *, version: str, commit: str = "unknown", codecs: Iterable[str] = ()
    ) -> None:
        self.registry = registry
        self.build_info = Info("pacsgw_build", "Build information", registry=registry)
        self.build_info.info({"version": version, "commit": commit, "python": platform.python_version()})
        self.associations_active = Gauge(
            "pacsgw_associations_active", "Associations currently open", registry=registry
        )
        self.associations = Counter(
            "pacsgw_associations",
            "Associations by how they ended or were refused",
            ["result"],
            registry=registry,
        )
        self.associations_rejected = Counter(
            "pacsgw_associations_rejected",
            "Association requests refused, by reason",
            ["reason"],
            registry=registry,
        )
        self.dimse_requests = Counter(
            "pacsgw_dimse_requests",
            "DIMSE requests answered, by service and status category",
            ["service", "status_category"],
            registry=registry,
        )
        self.dimse_failures = Counter(
            "pacsgw_dimse_failures",
            "DIMSE requests answered with a failure status, by service and reason",
            ["service", "reason"],
            registry=registry,
        )
        self.dimse_duration = Histogram(
            "pacsgw_dimse_request_duration_seconds",
            "Time from a DIMSE request to its final response, by service and status category",
            ["service", "status_category"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.received_bytes = Counter(
            "pacsgw_received_bytes",
            "Dataset bytes received in C-STORE requests that were stored, by modality and codec",
            ["modality", "codec"],
            registry=registry,
        )
        self.stored_bytes = Counter(
            "pacsgw_stored_bytes",
            "Blob bytes written for stored instances, by modality, codec and how the pixels were kept",
            ["modality", "codec", "storage_mode"],
            registry=registry,
        )
        # `rule` is a configured policy rule name (or a built-in one): bounded by the configuration.
        self.compression_ratio = Histogram(
            "pacsgw_compression_ratio",
            "Bytes received over blob bytes stored, per stored instance, by modality, policy rule and codec budget",
            ["modality", "rule", "budget"],
            buckets=_RATIO_BUCKETS,
            registry=registry,
        )
        self.saved_bytes = Counter(
            "pacsgw_compression_saved_bytes",
            "Bytes received minus blob bytes stored, summed over stored instances, by modality, policy rule and codec budget",
            ["modality", "rule", "budget"],
            registry=registry,
        )
        self.roi = RoiMetrics(registry)
        self.grown_bytes = Counter(
            "pacsgw_compression_grown_bytes",
            "Blob bytes stored beyond the bytes received, for the rare instance whose blob is larger",
            ["modality", "rule", "budget"],
            registry=registry,
        )
        self.instances = Counter(
            "pacsgw_instances_received",
            "C-STORE instances by modality and what the index did with them",
            ["modality", "result"],
            registry=registry,
        )
        self.codec_duration = Histogram(
            "pacsgw_codec_duration_seconds",
            "Codec time per instance, by codec and operation (encode, verify)",
            ["codec", "op"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.codec_input_bytes = Counter(
            "pacsgw_codec_input_bytes",
            "Dataset bytes given to each codec",
            ["codec"],
            registry=registry,
        )
        self.codec_output_bytes = Counter(
            "pacsgw_codec_output_bytes",
            "Blob bytes produced with each codec",
            ["codec"],
            registry=registry,
        )
        self.verification_failures = Counter(
            "pacsgw_codec_verification_failures",
            "Encoded data that did not decode bit-exactly (stored as received instead)",
            ["codec"],
            registry=registry,
        )
        self.codec_decisions = Counter(
            "pacsgw_codec_decisions",
            "Instances coded by the mode decision, by budget and winning candidate (codec and settings)",
            ["budget", "candidate"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "pacsgw_compression_fallbacks",
            "Instances stored as received although compression was planned, by reason",
            ["reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "pacsgw_compression_queue_depth",
            "Instances holding a codec pool slot: queued for or inside a codec worker",
            registry=registry,
        )
        self.pool_capacity = Gauge(
            "pacsgw_codec_pool_slots",
            "Instances the codec pool takes in at once (ingest.queue_limit)",
            registry=registry,
        )
        self.pool_workers = Gauge(
            "pacsgw_codec_pool_workers", "Codec worker processes", registry=registry
        )
        self.pool_waiting = Gauge(
            "pacsgw_codec_pool_waiting",
            "C-STORE requests waiting for a free codec pool slot (the pool is saturated while above 0)",
            registry=registry,
        )
        self.pool_wait = Histogram(
            "pacsgw_codec_pool_wait_seconds",
            "Time a C-STORE waited for a codec pool slot",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.pool_rejections = Counter(
            "pacsgw_codec_pool_rejections",
            "C-STORE requests refused (0xA700) because no codec pool slot freed in time",
            registry=registry,
        )
        self.worker_restarts = Counter(
            "pacsgw_codec_worker_restarts",
            "Times the codec worker pool was rebuilt after a worker process died",
            registry=registry,
        )
        self.blob_duration = Histogram(
            "pacsgw_blob_operation_duration_seconds",
            "Blob store latency, by configured store name and operation",
            ["store", "op"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.blob_errors = Counter(
            "pacsgw_blob_operation_errors",
            "Blob store operations that failed",
            ["store", "op"],
            registry=registry,
        )
        self.index_duration = Histogram(
            "pacsgw_index_operation_duration_seconds",
            "Metadata index latency",
            ["op"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.index_errors = Counter(
            "pacsgw_index_operation_errors",
            "Metadata index operations that failed (database unreachable or failing)",
            ["op"],
            registry=registry,
        )
        self.database_duration = Histogram(
            "pacsgw_database_statement_duration_seconds",
            "Index database latency per SQL statement, by statement kind",
            ["statement"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.database_errors = Counter(
            "pacsgw_database_errors",
            "Index database statements or connections that failed, by reason",
            ["reason"],
            registry=registry,
        )
        self.dependency_up = Gauge(
            "pacsgw_dependency_up",
            "1 when the last readiness check of the dependency passed, else 0",
            ["dependency"],
            registry=registry,
        )
        self.dependency_check_duration = Gauge(
            "pacsgw_dependency_check_duration_seconds",
            "How long the last readiness check of the dependency took",
            ["dependency"],
            registry=registry,
        )
        self.orphans_removed = Counter(
            "pacsgw_orphan_blobs_removed",
            "Blobs no index row referenced, removed by the sweep",
            registry=registry,
        )
        self.retrieve_suboperations = Counter(
            "pacsgw_retrieve_suboperations",
            "C-GET/C-MOVE C-STORE sub-operations, by the transfer syntax sent and how it was made",
            ["service", "transfer_syntax", "mode", "status"],
            registry=registry,
        )

        self.archive = ArchiveMetrics(registry)

        self._zero_known_series(codecs)

    def _zero_known_series(self, codecs: Iterable[str]) -> None:
        """Export the bounded, known label values at 0 from the start.

        A series that appears only with its first event makes `rate()` and `increase()` miss that
        event, and leaves alerts on it silent until a second one.
        """
        for service in SERVICES:
            for category in STATUS_CATEGORIES:
                self.dimse_requests.labels(service, category)
        for result in ("accepted", "rejected", "released", "aborted"):
            self.associations.labels(result)
        for reason in ("calling_ae_not_allowed", "other"):
            self.associations_rejected.labels(reason)
        for reason in ("codec_error", "verification_failed", "worker_lost"):
            self.fallbacks.labels(reason)
        for reason in ("unavailable", "error"):
            self.database_errors.labels(reason)
        for codec in codecs:
            self.verification_failures.labels(codec)

    def observe_blob(self, store: str, op: str, seconds: float, failed: bool) -> None:
        self.blob_duration.labels(store, op).observe(seconds)
        if failed:
            self.blob_errors.labels(store, op).inc()

    def observe_statement(self, kind: str, seconds: float) -> None:
        self.database_duration.labels(kind).observe(seconds)

    def observe_database_error(self, reason: str) -> None:
        self.database_errors.labels(reason).inc()

    def observe_dependency(self, dependency: str, up: bool, seconds: float) -> None:
        self.dependency_up.labels(dependency).set(1 if up else 0)
        self.dependency_check_duration.labels(dependency).set(seconds)

    @contextmanager
    def dimse(self, service: str) -> Iterator[DimseObservation]:
        outcome = DimseObservation()
        started = time.perf_counter()
        try:
            yield outcome
        except Exception:
            # Handlers map their errors to a status; one that escapes is a failure all the same.
            outcome.category = "failure"
            raise
        finally:
            self.dimse_duration.labels(service, outcome.category).observe(time.perf_counter() - started)
            self.dimse_requests.labels(service, outcome.category).inc()

    @contextmanager
    def timed(self, histogram: Histogram, *labels: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            histogram.labels(*labels).observe(time.perf_counter() - started)


_PSNR_BUCKETS = (30, 35, 40, 45, 50, 55, 60, 65, 70, 80, 90, 100)
_FRACTION_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class RoiMetrics:
    """ROI-hybrid coding at ingest: how much stayed exact, and how close the rest came."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.instances = Counter(
            "pacsgw_roi_hybrid_instances",
            "Instances stored ROI-hybrid (derived: lossy outside the region of interest), by modality and policy rule",
            ["modality", "rule"],
            registry=registry,
        )
        self.region = Histogram(
            "pacsgw_roi_hybrid_region_ratio",
            "Share of an ROI-hybrid instance's pixel values inside the region kept exact",
            ["modality"],
            buckets=_FRACTION_BUCKETS,
            registry=registry,
        )
        self.psnr = Histogram(
            "pacsgw_roi_hybrid_psnr_decibels",
            "PSNR of an ROI-hybrid instance (peak of Bits Stored), over all pixel values or those outside the region",
            ["modality", "region"],
            buckets=_PSNR_BUCKETS,
            registry=registry,
        )


class IndexSizeCollector(Collector):
    """Index size gauges, read from the index's running totals at scrape time."""

    def __init__(self, counts: Callable[[], object]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self._counts()
        except Exception:  # an unreachable database must not break the scrape
            return
        for name, attr, doc in (
            ("pacsgw_index_instances", "instances", "Instances in the index (current revisions)"),
            ("pacsgw_index_studies", "studies", "Studies in the index"),
            ("pacsgw_index_stored_bytes", "stored_bytes", "Blob bytes of indexed instances"),
            ("pacsgw_index_original_bytes", "original_bytes", "Bytes of indexed instances as received"),
        ):
            yield GaugeMetricFamily(name, doc, value=float(getattr(counts, attr, 0)))


# Values of pacsgw_archive_instances_total's `outcome` (gateway.services.archive.Outcome).
ARCHIVE_OUTCOMES = ("swapped", "kept", "skipped", "retry", "failed", "interrupted")
_ARCHIVE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ArchiveMetrics:
    """Archive recompression: throughput, outcomes and savings (its backlog: ArchiveCollector)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.instances = Counter(
            "pacsgw_archive_instances",
            "Instances archive recompression finished with, by archive codec and outcome",
            ["codec", "outcome"],
            registry=registry,
        )
        self.saved_bytes = Counter(
            "pacsgw_archive_saved_bytes",
            "Blob bytes archive swaps saved (ingest blob minus archive blob)",
            registry=registry,
        )
        self.duration = Histogram(
            "pacsgw_archive_duration_seconds",
            "Time to re-encode, verify and settle one instance",
            buckets=_ARCHIVE_BUCKETS,
            registry=registry,
        )
        for outcome in ARCHIVE_OUTCOMES:
            self.instances.labels("none", outcome)


class ArchiveCollector(Collector):
    """The archive backlog and pause flag, read from the database at scrape time: the CLI pauses
    a running server, and the backlog counts only the unfinished queue rows (an indexed count)."""

    def __init__(self, backlog: Callable[[], tuple[int, bool]]) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            backlog, paused = self._backlog()
        except Exception:  # an unreachable database must not break the scrape
            return
        yield GaugeMetricFamily(
            "pacsgw_archive_backlog",
            "Instances of quiet series queued for archive recompression or being re-encoded",
            value=float(backlog),
        )
        yield GaugeMetricFamily(
            "pacsgw_archive_paused", "1 while archive recompression is paused, else 0", value=float(paused)
        )
