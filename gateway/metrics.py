"""Every Prometheus metric of the gateway, built on an injected registry.

Names follow the Prometheus conventions: prefix `pacsgw_`, base units, `_total` only on counters
(prometheus_client appends it), and labels with bounded values only: never a UID, a patient
identifier, a peer address or exception text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
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


def modality_label(modality: str | None) -> str:
    value = (modality or "").strip().upper()
    return value if value in KNOWN_MODALITIES else "other"


@dataclass
class DimseObservation:
    """What the caller of Metrics.dimse() reports back about the request it timed."""

    status: int = 0x0000
    category: str = "success"


class Metrics:
    def __init__(self, registry: CollectorRegistry, *, version: str) -> None:
        self.registry = registry
        self.build_info = Info("pacsgw_build", "Build information", registry=registry)
        self.build_info.info({"version": version})
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
            "Time from a DIMSE request to its final response",
            ["service"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.received_bytes = Counter(
            "pacsgw_received_bytes",
            "Dataset bytes received in C-STORE requests that were stored",
            ["modality"],
            registry=registry,
        )
        self.stored_bytes = Counter(
            "pacsgw_stored_bytes",
            "Blob bytes written for stored instances",
            ["modality", "storage_mode"],
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
            "Instances waiting for or inside a codec worker",
            registry=registry,
        )
        self.worker_restarts = Counter(
            "pacsgw_codec_worker_restarts",
            "Times the codec worker pool was rebuilt after a worker process died",
            registry=registry,
        )
        self.blob_duration = Histogram(
            "pacsgw_blob_operation_duration_seconds",
            "Blob store latency",
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
        self.orphans_removed = Counter(
            "pacsgw_orphan_blobs_removed",
            "Blobs no index row referenced, removed by the sweep",
            registry=registry,
        )

    @contextmanager
    def dimse(self, service: str) -> Iterator[DimseObservation]:
        outcome = DimseObservation()
        started = time.perf_counter()
        try:
            yield outcome
        finally:
            self.dimse_duration.labels(service).observe(time.perf_counter() - started)
            self.dimse_requests.labels(service, outcome.category).inc()

    @contextmanager
    def timed(self, histogram: Histogram, *labels: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            histogram.labels(*labels).observe(time.perf_counter() - started)


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
