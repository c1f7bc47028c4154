"""Composition root: settings in, a running gateway out. Nothing is built at import time."""

from __future__ import annotations

import logging
import os
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from prometheus_client import CollectorRegistry, disable_created_metrics
from pynetdicom import _config as pynetdicom_config
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.engine import Engine

from gateway.config import Settings
from gateway.dimse.ae import build_ae, event_handlers
from gateway.dimse.find import FindHandler, accept_extended_negotiation
from gateway.dimse.handlers import AssociationTracker, EchoHandler, StoreHandler
from gateway.dimse.retrieve import GetHandler, MoveHandler
from gateway.http.readiness import Readiness
from gateway.http.server import HttpServer
from gateway.metrics import ArchiveCollector, IndexSizeCollector, Metrics
from gateway.services.archive import ArchiveService
from gateway.services.ingest import IngestService
from gateway.services.pool import CodecPool
from gateway.services.query import QueryService
from gateway.services.retrieve import RetrieveService
from gateway.services.structures import StructureLookup
from pixcodec import default_registry
from storage.archive_queue import ArchiveQueue
from storage.blobs.base import BlobStore
from storage.blobs.database import DatabaseBlobStore
from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.observed import ObservedBlobStore
from storage.db import create_engine_for, current_revision, head_revision, observe_statements, upgrade_to_head
from storage.index import SqlIndex
from storage.sweeper import sweep_orphans

log = logging.getLogger(__name__)

# Seconds between the periodic database and blob store checks behind pacsgw_dependency_up.
READINESS_INTERVAL_SECONDS = 10.0


def package_version() -> str:
    try:
        return version("pacs-gateway")
    except PackageNotFoundError:
        return "0+unknown"


def build_commit() -> str:
    """The source commit, which the container build records in the environment."""
    return os.environ.get("PACSGW_BUILD_COMMIT", "").strip() or "unknown"


def codec_ids() -> list[str]:
    return sorted({codec_id for codec_id, _version in default_registry().keys()})


class SchemaOutOfDate(Exception):
    """The database holds an older schema: `pacs-gateway db upgrade` must run first."""


def configure_pynetdicom() -> None:
    # Spool each received dataset to a file instead of decoding it in memory, and keep
    # identifiers (patient data) out of pynetdicom's own logs.
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    pynetdicom_config.PASS_CONTEXTVARS = False


def open_database(settings: Settings, *, upgrade_empty: bool = True) -> Engine:
    engine = create_engine_for(
        settings.database_url, pool_size=settings.database.pool_size + settings.dicom.max_associations
    )
    current = current_revision(engine)
    if current is None and upgrade_empty:
        log.info("empty database: creating the schema")
        upgrade_to_head(engine)
    elif current != head_revision():
        engine.dispose()
        raise SchemaOutOfDate(
            f"database schema is at {current}, this release needs {head_revision()}: "
            "run `pacs-gateway db upgrade`"
        )
    return engine


def open_blob_store(settings: Settings, engine: Engine) -> BlobStore:
    if settings.blobs.backend == "database":
        return DatabaseBlobStore(engine, settings.blobs.store_name)
    return FilesystemBlobStore(Path(settings.blob_path), settings.blobs.store_name)


class Gateway:
    """The DICOM service, its workers and its HTTP side, started and stopped in order."""

    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        configure_pynetdicom()
        # Without it, every counter and histogram also exports a `_created` gauge per label set,
        # doubling the series Prometheus stores for a timestamp nobody queries.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(
            self.registry, version=package_version(), commit=build_commit(), codecs=codec_ids()
        )
        settings.spool_path.mkdir(parents=True, exist_ok=True)
        self.engine = open_database(settings)
        observe_statements(self.engine, self.metrics.observe_statement, self.metrics.observe_database_error)
        self.index = SqlIndex(self.engine)
        self.blobs: BlobStore = ObservedBlobStore(open_blob_store(settings, self.engine), self.metrics.observe_blob)
        self.registry.register(IndexSizeCollector(self.index.counts))
        self.pool = CodecPool(
            workers=settings.worker_count,
            queue_limit=settings.queue_limit,
            queue_timeout=settings.ingest.queue_timeout_seconds,
            on_depth=self.metrics.queue_depth.set,
            on_restart=self.metrics.worker_restarts.inc,
            on_waiting=self.metrics.pool_waiting.set,
            on_wait=self.metrics.pool_wait.observe,
            on_rejected=self.metrics.pool_rejections.inc,
            worker_logging=(settings.logging.level, settings.logging.format),
        )
        self.metrics.pool_capacity.set(settings.queue_limit)
        self.metrics.pool_workers.set(settings.worker_count)
        self.ingest = IngestService(
            index=self.index,
            blobs=self.blobs,
            pool=self.pool,
            metrics=self.metrics,
            spool_dir=settings.spool_path,
            duplicates=settings.ingest.duplicates,
            rules=settings.policy.rules,
            structures=StructureLookup(self.engine, self.blobs),
        )
        self.query = QueryService(self.engine, self.blobs, ae_title=settings.dicom.ae_title)
        # Two instances per codec worker ahead of each retrieval keep every worker busy.
        self.retrieve = RetrieveService(self.engine, self.blobs, self.pool, prefetch=2 * settings.worker_count)
        tracker = AssociationTracker(self.metrics, frozenset(settings.dicom.allowed_calling_aets))
        self.ae = build_ae(settings.dicom)
        self._handlers = event_handlers(
            on_conn_open=tracker.on_conn_open,
            on_accepted=tracker.on_accepted,
            on_rejected=tracker.on_rejected,
            on_released=tracker.on_released,
            on_aborted=tracker.on_aborted,
            on_echo=EchoHandler(tracker, self.metrics),
            on_store=StoreHandler(self.ingest, tracker, self.metrics),
            on_find=FindHandler(self.query, tracker, self.metrics),
            on_sop_extended=accept_extended_negotiation,
            on_get=GetHandler(self.retrieve, tracker, self.metrics),
            on_move=MoveHandler(self.retrieve, tracker, self.metrics, settings.dicom.destinations),
        )
        self.archive_queue = ArchiveQueue(self.engine)
        self.registry.register(ArchiveCollector(self.archive_queue.backlog))
        self.archive: ArchiveService | None = None
        if settings.archive.enabled:
            self.archive = build_archive(settings, self.archive_queue, self.blobs, self.metrics)
        self.readiness = Readiness(
            {"database": self.index.ping, "blob_store": self.blobs.ping}, self.metrics.observe_dependency
        )
        self.http: HttpServer | None = None
        if settings.http.enabled:
            self.http = HttpServer(
                settings.http.bind_address, settings.http.port, self.registry, self.readiness.check
            )
        self.server: ThreadedAssociationServer | None = None
        self._stopping = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_periodically, name="sweeper", daemon=True)

    @property
    def dicom_port(self) -> int:
        if self.server is None:
            raise RuntimeError("gateway not started")
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.pool.warm()
        self.readiness.start(READINESS_INTERVAL_SECONDS)
        if self.http is not None:
            self.http.start()
        dicom = self.settings.dicom
        self.server = self.ae.start_server(
            (dicom.bind_address, dicom.port), block=False, evt_handlers=list(self._handlers)
        )
        self._sweeper.start()
        if self.archive is not None:
            self.archive.start()
        log.info(
            "gateway started",
            extra={"fields": {"ae_title": dicom.ae_title, "dicom_port": self.dicom_port,
                              "http_port": self.http.port if self.http else None,
                              "workers": self.settings.worker_count}},
        )

    def stop(self) -> None:
        """Stop listening, let running associations finish (up to the grace period), then close.

        A second call does nothing (a test restarting a gateway, then its teardown).
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.archive is not None:
            self.archive.stop()  # background work first: killed at once, its claims given back
        server = self.server
        if server is not None:
            server.shutdown()
            deadline = time.monotonic() + self.settings.dicom.shutdown_grace_seconds
            while server.active_associations and time.monotonic() < deadline:
                time.sleep(0.05)
            for assoc in server.active_associations:
                log.warning("aborting an association still running at shutdown")
                assoc.abort()
        self.ae.shutdown()
        self.retrieve.shutdown()
        self.pool.shutdown()
        if self.http is not None:
            self.http.stop()
        self.readiness.stop()
        self.engine.dispose()
        log.info("gateway stopped")

    def sweep(self) -> int:
        removed = sweep_orphans(self.index, self.blobs, grace_seconds=self.settings.ingest.orphan_grace_seconds)
        self.metrics.orphans_removed.inc(removed)
        removed_spool = _clean_spool(self.settings.spool_path, self.settings.ingest.orphan_grace_seconds)
        if removed or removed_spool:
            log.info("sweep removed leftovers", extra={"fields": {"orphan_blobs": removed,
                                                                   "spool_files": removed_spool}})
        return removed

    def _sweep_periodically(self) -> None:
        while not self._stopping.wait(self.settings.ingest.sweep_interval_seconds):
            try:
                self.sweep()
            except Exception:
                log.exception("orphan sweep failed")


def build_archive(settings: Settings, queue: ArchiveQueue, blobs: BlobStore, metrics: Metrics) -> ArchiveService:
    """Archive recompression on its own codec pool: background work never takes an ingest slot."""
    archive = settings.archive
    pool = CodecPool(
        workers=archive.workers,
        queue_limit=archive.workers,
        queue_timeout=archive.lease_seconds,
        worker_logging=(settings.logging.level, settings.logging.format),
        niceness=archive.niceness,
    )
    return ArchiveService(
        queue,
        blobs,
        pool,
        archive,
        rules=settings.policy.rules,
        scratch_dir=settings.spool_path / "archive",
        metrics=metrics.archive,
        single_writer=settings.database_url.startswith("sqlite"),
    )


def _clean_spool(spool: Path, older_than: float) -> int:
    """Remove spool files a crash left behind."""
    limit = time.time() - older_than
    removed = 0
    for path in spool.glob("*.blob"):
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
