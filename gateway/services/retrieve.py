"""C-GET and C-MOVE: which instances an identifier selects, and each one ready to send.

For every instance the transfer syntax is the best one the peer accepted for its SOP class, in
DESIGN.md's order: the received syntax (rebuilt exactly), the standard syntax of the stored
pixcodec codec (frames sent as stored), explicit VR little endian, implicit VR little endian.
Preparing (rebuild, decode) runs in the codec worker processes a few instances ahead of the
network, so the link does not wait for the codec while memory holds only those few.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from pydicom import uid
from pydicom.dataset import Dataset
from sqlalchemy.engine import Engine

from gateway.errors import InvalidIdentifier, MatchesUnavailable, OutOfResources
from gateway.services.identifiers import UNIQUE_KEYS, InformationModel, Negotiated, parse_identifier
from gateway.services.pool import CodecPool, WorkerLost
from gateway.services.retrieve_job import Candidate, RetrieveJob, run_job
from gateway.services.transcode import Mode
from pixcodec import CodecError, CodecRegistry, default_registry
from storage.blobs.base import BlobNotFound, BlobStore, BlobStoreError
from storage.db import IndexUnavailable
from storage.index import SqlIndex
from storage.matching import Universal
from storage.query import Level, LevelQuery, matching_instances
from storage.records import StorageMode, StoredInstance

log = logging.getLogger(__name__)

# Query/Retrieve GET and MOVE SOP classes, by the information model whose identifiers they take.
GET_MODELS: Mapping[str, InformationModel] = {
    "1.2.840.10008.5.1.4.1.2.1.3": InformationModel.PATIENT_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.3": InformationModel.STUDY_ROOT,
}
MOVE_MODELS: Mapping[str, InformationModel] = {
    "1.2.840.10008.5.1.4.1.2.1.2": InformationModel.PATIENT_ROOT,
    "1.2.840.10008.5.1.4.1.2.2.2": InformationModel.STUDY_ROOT,
}

NATIVE_TARGETS = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)

# Sub-operations are counted in US fields (PS3.7 C.4.2/C.4.3).
MAX_SUBOPERATIONS = 65535


@dataclass(frozen=True, slots=True)
class Prepared:
    """One instance ready for its C-STORE sub-operation: the dataset's bytes in `syntax` (no File
    Meta; deflated if `syntax` is), or the reason it cannot be sent."""

    stored: StoredInstance
    data: bytes | None
    syntax: str | None = None
    mode: Mode | None = None
    error: str | None = None


class RetrieveService:
    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        pool: CodecPool,
        *,
        prefetch: int,
        registry: CodecRegistry | None = None,
    ) -> None:
        """`prefetch`: instances prepared ahead of the network, per request."""
        self._engine, self._blobs, self._pool = engine, blobs, pool
        self._registry = registry or default_registry()
        self._prefetch = max(1, prefetch)
        # These threads only read blobs and wait on the codec workers, where the work happens.
        self._executor = ThreadPoolExecutor(max_workers=4 * self._prefetch, thread_name_prefix="retrieve")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def resolve(self, identifier: Dataset, model: InformationModel) -> list[StoredInstance]:
        """The current instances the identifier selects (PS3.4 C.4.2.2.1 / C.4.3.2.1).

        Only the unique keys at and above the Query/Retrieve Level select; a list of UIDs is
        allowed at the level itself. InvalidIdentifier (0xA900) for a bad identifier,
        MatchesUnavailable (0xA701) when the index cannot be read.
        """
        request = parse_identifier(identifier, model, Negotiated())
        unique = {UNIQUE_KEYS[level] for level in Level if model.top.depth <= level.depth <= request.level.depth}
        conditions = {kw: m for kw, m in request.index_query.conditions.items() if kw in unique}
        own = UNIQUE_KEYS[request.level]
        if own not in conditions or isinstance(conditions[own], Universal):
            raise InvalidIdentifier(f"{own} required to retrieve at the {request.level.value} level")
        try:
            found = list(matching_instances(self._engine, LevelQuery(Level.IMAGE, conditions)))
        except IndexUnavailable as exc:
            raise MatchesUnavailable(f"database unavailable: {exc}") from exc
        if len(found) > MAX_SUBOPERATIONS:
            raise InvalidIdentifier(f"{len(found)} instances match; at most {MAX_SUBOPERATIONS} per request")
        return found

    def codec_syntax(self, stored: StoredInstance) -> str | None:
        """The standard transfer syntax the stored frames are in, if the codec has one."""
        if stored.storage_mode is not StorageMode.COMPRESSED or stored.codec_id is None:
            return None
        try:
            codec = self._registry.get(stored.codec_id, stored.codec_version or 0)
        except CodecError:
            return None
        return codec.transfer_syntax_uid

    def candidates(self, stored: StoredInstance, accepted: Iterable[str]) -> list[Candidate]:
        """The ways to send `stored` to a peer that accepted `accepted` for its SOP class, best first."""
        offered = set(accepted)
        received = stored.transfer_syntax_uid
        out: list[Candidate] = []
        if received in offered:
            out.append(Candidate(received, Mode.ORIGINAL))
        codec_syntax = self.codec_syntax(stored)
        if codec_syntax is not None and codec_syntax != received and codec_syntax in offered:
            out.append(Candidate(codec_syntax, Mode.PASSTHROUGH))
        out.extend(Candidate(s, Mode.DECODED) for s in NATIVE_TARGETS if s in offered and s != received)
        return out

    def wanted_syntaxes(self, stored: StoredInstance) -> list[str]:
        """Every syntax worth proposing for `stored` (C-MOVE), best first."""
        every = [stored.transfer_syntax_uid, self.codec_syntax(stored), *NATIVE_TARGETS]
        return list(dict.fromkeys(s for s in every if s is not None))

    def prepare(self, stored: StoredInstance, candidates: list[Candidate]) -> Prepared:
        """The first candidate that works, made in a codec worker; a failure (never an exception)
        when none does."""
        try:
            stored, blob = self._read_blob(stored)
            result = self._pool.run(run_job, RetrieveJob(stored, blob, tuple(candidates)))
            if result.data is None or result.syntax is None:
                return Prepared(stored, None, error=result.error)
        except (BlobStoreError, IndexUnavailable, OSError, OutOfResources, WorkerLost) as exc:
            return Prepared(stored, None, error=str(exc) or type(exc).__name__)
        return Prepared(stored, result.data, result.syntax, result.mode)

    def _read_blob(self, stored: StoredInstance) -> tuple[StoredInstance, bytes]:
        """The blob's bytes, with the instance as of that blob.

        An archive swap may have replaced the blob since the instance was located, and deleted
        it once its grace period was over (a long retrieval): the revision is located once more.
        The passthrough candidate of the old codec then simply does not apply to the new blob.
        """
        try:
            with self._blobs.open(stored.blob) as fp:
                return stored, fp.read()
        except BlobNotFound:
            fresh = SqlIndex(self._engine).locate(stored.sop_instance_uid, stored.revision)
            if fresh is None or fresh.blob == stored.blob:
                raise
            with self._blobs.open(fresh.blob) as fp:
                return fresh, fp.read()

    def prepared(
        self,
        instances: list[StoredInstance],
        accepted: Callable[[str], Iterable[str]],
        cancelled: threading.Event | None = None,
    ) -> Generator[Prepared, None, None]:
        """Each instance prepared, in order, at most `prefetch` of them ahead of the consumer.

        `accepted(sop_class)` gives the transfer syntaxes the peer accepted for that SOP class.
        Closing the iterator (cancel, abort) drops the work not yet started.
        """
        pending: deque[Future[Prepared]] = deque()
        upcoming = iter(instances)

        def submit() -> None:
            stored = next(upcoming, None)
            if stored is not None and not (cancelled is not None and cancelled.is_set()):
                plan = self.candidates(stored, accepted(stored.sop_class_uid))
                pending.append(self._executor.submit(self.prepare, stored, plan))

        try:
            for _ in range(self._prefetch):
                submit()
            while pending:
                result = pending.popleft().result()
                submit()
                yield result
        finally:
            for future in pending:
                future.cancel()


def failed_placeholder(prepared: Prepared) -> Dataset:
    """What to yield for a sub-operation that cannot be sent: pynetdicom's C-STORE of it fails
    before anything goes on the wire (no SOP Class UID), so pynetdicom counts it as failed and
    names its SOP Instance UID in the Failed SOP Instance UID List."""
    placeholder = Dataset()
    placeholder.SOPInstanceUID = prepared.stored.sop_instance_uid
    return placeholder


def sop_classes(instances: Iterable[StoredInstance]) -> list[str]:
    return list(dict.fromkeys(stored.sop_class_uid for stored in instances))
