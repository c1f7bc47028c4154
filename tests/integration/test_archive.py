"""Archive recompression on a real gateway: corpus files sent with pynetdicom, then re-encoded
once their series is quiet, on SQLite and PostgreSQL.

Each test checks what a user relies on: every instance still rebuilds byte for byte, the stored
bytes only shrink, the running totals equal a recount, nothing is lost across a restart, a C-GET
during the swaps returns the instances as received, pause holds new work, failures are recorded.
"""

from __future__ import annotations

import collections
import io
import time
import zlib
from pathlib import Path
from typing import BinaryIO, cast

import pydicom
import pytest
import sqlalchemy as sa
from pydicom import uid
from pydicom.dataset import Dataset
from pixcodec import ContainerReader, PredCodec
from pydicom.filereader import read_dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.presentation import build_context

from gateway import cli
from gateway.app import Gateway
from gateway.instance_blob import Section, read_footer
from gateway.services.archive import Outcome
from gateway.services.archive_job import ArchiveJob, run_job
from gateway.services.rebuild import rebuild_instance
from gateway.services.retrieve_job import Candidate
from gateway.services.transcode import Mode
from storage.archive_queue import ArchiveQueue, WorkState
from storage.models import ArchiveWork, Instance, RetiredBlob
from tests.conftest import CorpusFile
from tests.integration.conftest import GatewayFactory, dataset_bytes, needs_new_meta, send_files, with_file_meta
from tests.integration.test_retrieve import Original, StoreScp, _original, check

STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
# Background threads wait on these: a test drives the work itself unless it starts them on purpose.
IDLE = {"quiet_seconds": 0, "poll_seconds": 3600, "retired_grace_seconds": 3600}
BUSY = {"quiet_seconds": 0, "poll_seconds": 0.05, "lease_seconds": 5}
# Generous bound on how long background work may take before a test gives up on it.
DEADLINE_SECONDS = 300


def _subset(corpus: list[CorpusFile], per_series: int = 2, limit: int = 12) -> list[CorpusFile]:
    """Small native images from different series (CT, MR, colour, multi-frame where present)."""
    taken: collections.Counter[str] = collections.Counter()
    chosen: list[CorpusFile] = []
    for item in corpus:
        entry = item.entry
        if (entry.get("encapsulated") or not entry.get("has_pixel_data") or entry.get("ts_lossy")
                or entry.get("transfer_syntax_uid") == uid.DeflatedExplicitVRLittleEndian
                or entry["size_bytes"] > 3_000_000 or taken[entry["series"]] >= per_series):
            continue
        taken[entry["series"]] += 1
        chosen.append(item)
        if len(chosen) == limit:
            break
    return chosen


def _sendable(files: list[CorpusFile], tmp: Path) -> list[Path]:
    (tmp / "meta").mkdir(exist_ok=True)
    return [with_file_meta(f.path, tmp / "meta") if needs_new_meta(f.path) else f.path for f in files]


def _originals(files: list[CorpusFile]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in files:
        raw = item.path.read_bytes()
        body = dataset_bytes(item.path) if raw[128:132] == b"DICM" else raw
        out[str(pydicom.dcmread(item.path, stop_before_pixels=True, force=True).SOPInstanceUID)] = body
    return out


def _store(gateway: Gateway, files: list[CorpusFile], tmp: Path) -> dict[str, bytes]:
    statuses = send_files(gateway.dicom_port, _sendable(files, tmp))
    assert {path.name: status for path, status in statuses.items() if status != 0} == {}
    return _originals(files)


def _rebuilt(gateway: Gateway) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for stored in gateway.index.iter_instances(current_only=True):
        sink = io.BytesIO()
        rebuild_instance(gateway.blobs, stored, sink.write)
        out[stored.sop_instance_uid] = sink.getvalue()
    return out


def _recount(gateway: Gateway) -> int:
    with gateway.engine.connect() as connection:
        return int(connection.scalar(sa.select(sa.func.coalesce(sa.func.sum(Instance.blob_size), 0))) or 0)


def _states(gateway: Gateway) -> dict[str, int]:
    with gateway.engine.connect() as connection:
        rows = connection.execute(sa.select(ArchiveWork.state, sa.func.count()).group_by(ArchiveWork.state)).all()
    return {state: int(count) for state, count in rows}


def _eligible(gateway: Gateway) -> int:
    with gateway.engine.connect() as connection:
        return int(connection.scalar(
            sa.select(sa.func.count()).where(Instance.is_current, Instance.storage_mode == "compressed",
                                             Instance.policy_mode == "lossless")) or 0)


def _sample(gateway: Gateway, name: str, labels: dict[str, str] | None = None) -> float:
    return gateway.registry.get_sample_value(name, labels or {}) or 0.0


def _wait_until_settled(gateway: Gateway) -> None:
    """Until the background workers have settled every queued instance (or the deadline)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        states = _states(gateway)
        if states and not states.get("pending") and not states.get("running") and sum(states.values()) >= _eligible(gateway):
            return
        time.sleep(0.1)
    pytest.fail(f"archive work not settled: {_states(gateway)}")


def test_archive_shrinks_stored_bytes_and_every_instance_rebuilds_exactly(
    make_gateway: GatewayFactory, db_url: str, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    gateway = make_gateway(db_url, archive=IDLE)
    assert gateway.archive is not None
    originals = _store(gateway, _subset(corpus), tmp_path)
    before = gateway.index.counts().stored_bytes
    old_keys = {s.blob.key for s in gateway.index.iter_instances()}

    processed = gateway.archive.drain()

    outcomes = collections.Counter(p.outcome for p in processed)
    assert outcomes[Outcome.SWAPPED] >= 1
    assert set(outcomes) <= {Outcome.SWAPPED, Outcome.KEPT}
    assert len(processed) == _eligible(gateway) >= len(originals) // 2
    assert _rebuilt(gateway) == originals
    after = gateway.index.counts().stored_bytes
    saved = sum(p.saved_bytes for p in processed)
    assert after == before - saved == _recount(gateway)
    assert saved > 0
    status = ArchiveQueue(gateway.engine).counts()
    assert status.saved_bytes == saved and status.backlog == 0
    assert status.by_state[WorkState.DONE] == outcomes[Outcome.SWAPPED]
    assert _sample(gateway, "pacsgw_archive_saved_bytes_total") == saved
    assert _sample(gateway, "pacsgw_archive_backlog") == 0
    swapped_codecs = {p.codec for p in processed if p.outcome == Outcome.SWAPPED}
    assert sum(_sample(gateway, "pacsgw_archive_instances_total", {"codec": c, "outcome": "swapped"})
               for c in swapped_codecs) == outcomes[Outcome.SWAPPED]
    # Nothing is redone: a second pass finds no work.
    assert gateway.archive.drain() == []

    # The replaced blobs stay readable through their grace period, also past the orphan sweep.
    with gateway.engine.connect() as connection:
        retired = set(connection.scalars(sa.select(RetiredBlob.blob_key)))
    assert len(retired) == outcomes[Outcome.SWAPPED] and retired <= old_keys
    removed = gateway.index.referenced_keys(gateway.blobs.name, retired)
    assert removed == retired
    with gateway.engine.begin() as connection:
        connection.execute(sa.update(RetiredBlob).values(delete_after=sa.func.current_timestamp()))
    assert gateway.archive.delete_retired() == len(retired)
    keys = set(gateway.blobs.iter_keys_older_than(0))
    assert keys == {s.blob.key for s in gateway.index.iter_instances()}
    assert _rebuilt(gateway) == originals


def test_a_restart_in_the_middle_loses_nothing_and_finishes(
    make_gateway: GatewayFactory, db_url: str, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    first = make_gateway(db_url, archive=IDLE)
    originals = _store(first, _subset(corpus), tmp_path)
    before = first.index.counts().stored_bytes
    assert first.archive is not None
    first.archive.poll()
    assert first.archive.process_one() is not None  # one instance finished before the restart
    # A worker dies between encode and swap: its claim is running, its new blob an orphan.
    queue = ArchiveQueue(first.engine)
    task = queue.claim(lease_seconds=0)  # a lease that lapsed with the process
    assert task is not None
    work = tmp_path / "crashed"
    work.mkdir()
    with first.blobs.open(task.blob) as src:
        (work / "current.blob").write_bytes(src.read())
    result = run_job(ArchiveJob(work / "current.blob", work / "dataset", work / "archive.blob",
                                task.dataset_sha256, "auto"))
    assert result.error is None
    first.blobs.put_file(work / "archive.blob")
    first.stop()

    second = make_gateway(db_url, data_dir=first.settings.data_dir, archive=BUSY)
    _wait_until_settled(second)

    states = _states(second)
    assert set(states) <= {"done", "kept"} and sum(states.values()) == _eligible(second)
    assert _rebuilt(second) == originals
    after = second.index.counts().stored_bytes
    assert after == _recount(second) <= before
    with second.engine.connect() as connection:
        attempts = connection.scalar(sa.select(ArchiveWork.attempts).where(ArchiveWork.instance_pk == task.instance_pk))
    assert attempts in (1, 2)  # the crashed claim counted once at most before it was redone


def test_stopping_mid_backlog_is_prompt_and_a_restart_finishes(
    make_gateway: GatewayFactory, db_url: str, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    first = make_gateway(db_url, archive={**BUSY, "enabled": False})
    originals = _store(first, _subset(corpus), tmp_path)
    first.stop()
    running = make_gateway(db_url, data_dir=first.settings.data_dir, archive=BUSY)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not _states(running).get("done") and time.monotonic() < deadline:
        time.sleep(0.05)
    running.stop()  # with work pending or running: killed, claims given back
    stopped = _states(running)
    assert stopped.get("running", 0) == 0 or db_url.startswith("postgresql")

    restarted = make_gateway(db_url, data_dir=first.settings.data_dir, archive=BUSY)
    _wait_until_settled(restarted)
    assert set(_states(restarted)) <= {"done", "kept"}
    assert _rebuilt(restarted) == originals
    assert restarted.index.counts().stored_bytes == _recount(restarted)


def _c_get(port: int, study_uid: str, syntaxes_by_class: dict[str, list[str]]) -> dict[str, tuple[str, bytes]]:
    """C-GET of one study with pynetdicom; each instance's transfer syntax and dataset bytes."""
    contexts = [build_context(STUDY_ROOT_GET)]
    for sop_class, syntaxes in syntaxes_by_class.items():
        contexts.extend(build_context(sop_class, [syntax]) for syntax in syntaxes)
    roles = [build_role(sop_class, scp_role=True) for sop_class in syntaxes_by_class]
    scp = StoreScp()
    assoc = AE(ae_title="GETSCU").associate("127.0.0.1", port, contexts=contexts, ae_title="PACSGW", ext_neg=roles,
                                            evt_handlers=[(evt.EVT_C_STORE, scp.on_store)])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    try:
        final = None
        for status, _identifier in assoc.send_c_get(identifier, STUDY_ROOT_GET):
            final = status
        assert final is not None and final.Status == 0x0000, final
    finally:
        assoc.release()
    return scp.received


def _check_received(syntax: str, raw: bytes, original: Original) -> str:
    data = zlib.decompress(raw, -zlib.MAX_WBITS) if uid.UID(syntax).is_deflated else raw
    received = read_dataset(io.BytesIO(data), uid.UID(syntax).is_implicit_VR, uid.UID(syntax).is_little_endian)
    received.file_meta = pydicom.dataset.FileMetaDataset()
    received.file_meta.TransferSyntaxUID = syntax
    return check(received, syntax, data, original)


def _study_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True, force=True).StudyInstanceUID)


def test_c_get_during_swaps_returns_instances_as_received(
    make_gateway: GatewayFactory, db_url: str, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    files = _subset(corpus, per_series=6, limit=12)
    first = make_gateway(db_url, archive={**BUSY, "enabled": False})
    originals = _store(first, files, tmp_path)
    first.stop()
    expected = dict(_original(f.path) for f in files)
    studies = sorted({_study_of(f.path) for f in files})
    as_received: dict[str, list[str]] = {}
    for original in expected.values():
        sop_class = str(pydicom.dcmread(original.path, stop_before_pixels=True, force=True).SOPClassUID)
        as_received.setdefault(sop_class, [uid.ExplicitVRLittleEndian])
        if original.syntax not in as_received[sop_class]:
            as_received[sop_class].append(original.syntax)
    # Alternately the syntax received (rebuilt as stored) and explicit little endian (decoded).
    offers = [as_received, {sop_class: [uid.ExplicitVRLittleEndian] for sop_class in as_received}]

    # Every replaced blob is deleted at once: a retrieval that located one must find the new one.
    gateway = make_gateway(db_url, data_dir=first.settings.data_dir,
                           archive={**BUSY, "retired_grace_seconds": 0, "poll_seconds": 0.01})
    rounds = 0
    modes: collections.Counter[str] = collections.Counter()
    while True:
        states = _states(gateway)
        settled = bool(states) and not states.get("pending") and not states.get("running")
        for study in studies:
            received = _c_get(gateway.dicom_port, study, offers[rounds % 2])
            assert received.keys() == {u for u, o in expected.items() if _study_of(o.path) == study}
            for sop_uid, (syntax, raw) in received.items():
                modes[_check_received(syntax, raw, expected[sop_uid])] += 1
        rounds += 1
        if settled or rounds > 200:
            break
    assert rounds > 1 and modes["original"] and modes["decoded"], (rounds, modes)
    assert len(originals) == len(expected)
    assert set(_states(gateway)) <= {"done", "kept"}
    assert _states(gateway).get("done")


def test_a_retrieval_that_located_a_retired_blob_reads_the_new_one(
    make_gateway: GatewayFactory, db_url: str, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    gateway = make_gateway(db_url, archive={**IDLE, "retired_grace_seconds": 0})
    assert gateway.archive is not None
    originals = _store(gateway, _subset(corpus), tmp_path)
    located = list(gateway.index.iter_instances(current_only=True))
    processed = gateway.archive.drain()
    swapped = sum(p.outcome == Outcome.SWAPPED for p in processed)
    assert swapped and gateway.archive.delete_retired() == swapped  # no grace: gone at once
    gone = [s for s in located if not gateway.blobs.exists(s.blob)]
    assert len(gone) == swapped

    for stored in located:
        prepared = gateway.retrieve.prepare(stored, [Candidate(stored.transfer_syntax_uid, Mode.ORIGINAL)])
        assert prepared.error is None, prepared.error
        assert prepared.data is not None
        # What goes on the wire is the received dataset, byte for byte, after its File Meta.
        assert originals[stored.sop_instance_uid].endswith(prepared.data)
        sink = io.BytesIO()
        rebuild_instance(gateway.blobs, gateway.index.locate(stored.sop_instance_uid) or stored, sink.write)
        assert sink.getvalue() == originals[stored.sop_instance_uid]


def _config(tmp_path: Path, gateway: Gateway, db_url: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'data_dir = "{gateway.settings.data_dir}"\n[database]\nurl = "{db_url}"\n'
                    '[logging]\nformat = "text"\n')
    return path


def test_pause_holds_new_work_until_resumed(
    make_gateway: GatewayFactory, db_url: str, corpus: list[CorpusFile], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = make_gateway(db_url, archive=IDLE)
    assert gateway.archive is not None
    _store(gateway, _subset(corpus, limit=4), tmp_path)
    config = ["--config", str(_config(tmp_path, gateway, db_url))]
    assert cli.main(["archive", "pause", *config]) == 0
    assert _sample(gateway, "pacsgw_archive_paused") == 1

    assert gateway.archive.drain() == []
    assert _sample(gateway, "pacsgw_archive_backlog") == _eligible(gateway) > 0
    capsys.readouterr()
    assert cli.main(["archive", "status", *config]) == 0
    status = capsys.readouterr().out
    assert "paused: yes" in status and f"backlog: {_eligible(gateway)} instances" in status

    assert cli.main(["archive", "resume", *config]) == 0
    processed = gateway.archive.drain()
    assert len(processed) == _eligible(gateway)
    assert _sample(gateway, "pacsgw_archive_paused") == 0
    assert _sample(gateway, "pacsgw_archive_backlog") == 0
    capsys.readouterr()
    assert cli.main(["archive", "status", *config]) == 0
    status = capsys.readouterr().out
    saved = ArchiveQueue(gateway.engine).counts().saved_bytes
    assert "backlog: 0 instances" in status and f"saved: {saved} bytes" in status


def test_failures_are_recorded_counted_and_leave_the_instance_as_it_was(
    make_gateway: GatewayFactory, db_url: str, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    # A rule naming a codec this release does not have: every attempt fails the same way.
    rule = {"name": "broken-archive", "archive_codec": "no-such-codec"}
    gateway = make_gateway(db_url, archive={**IDLE, "max_attempts": 2}, policy={"rules": [rule]})
    assert gateway.archive is not None
    originals = _store(gateway, _subset(corpus, limit=3), tmp_path)
    before = gateway.index.counts().stored_bytes
    processed = gateway.archive.drain()
    eligible = _eligible(gateway)
    assert collections.Counter(p.outcome for p in processed) == {Outcome.RETRY: eligible, Outcome.FAILED: eligible}
    with gateway.engine.connect() as connection:
        rows = connection.execute(sa.select(ArchiveWork.state, ArchiveWork.attempts, ArchiveWork.last_error)).all()
    assert {(state, attempts) for state, attempts, _ in rows} == {("failed", 2)}
    assert all("no-such-codec" in (error or "") for _, _, error in rows)
    assert _sample(gateway, "pacsgw_archive_instances_total", {"codec": "none", "outcome": "failed"}) == eligible
    assert gateway.index.counts().stored_bytes == before == _recount(gateway)
    assert _rebuilt(gateway) == originals
    assert gateway.archive.drain() == []  # failed for good: not retried


def test_a_fixed_archive_codec_and_a_lost_race_are_respected(
    make_gateway: GatewayFactory, db_url: str, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    rule = {"name": "ct-jpeg-xl", "modality": ["CT"], "archive_codec": "jpeg-xl"}
    gateway = make_gateway(db_url, archive=IDLE, policy={"rules": [rule]})
    assert gateway.archive is not None
    ct = [f for f in _subset(corpus, per_series=3, limit=40) if f.entry["modality"] == "CT"][:3]
    originals = _store(gateway, ct, tmp_path)
    queue = ArchiveQueue(gateway.engine)
    gateway.archive.poll()
    task = queue.claim(lease_seconds=60)
    assert task is not None
    # Another worker (its lease lapsed in between) swaps the same instance first.
    with gateway.engine.begin() as connection:
        connection.execute(sa.update(ArchiveWork).values(lease_until=sa.func.current_timestamp()))
    other = queue.claim(lease_seconds=0)
    assert other is not None and other.instance_pk == task.instance_pk
    first = gateway.archive.process(other)
    assert first.outcome == Outcome.SWAPPED and first.codec == "jpeg-xl"
    late = gateway.archive.process(task)
    assert late.outcome == Outcome.SKIPPED  # the compare-and-swap on the old blob key refused it
    processed = gateway.archive.drain()
    assert {p.codec for p in processed} <= {"jpeg-xl"}
    with gateway.engine.connect() as connection:
        codecs = set(connection.scalars(sa.select(Instance.codec_id).where(Instance.is_current)))
        done = connection.scalar(sa.select(ArchiveWork.state).where(ArchiveWork.instance_pk == task.instance_pk))
    assert done == "done"
    assert "jpeg-xl" in codecs
    assert _rebuilt(gateway) == originals
    assert gateway.index.counts().stored_bytes == _recount(gateway)
    assert set(gateway.blobs.iter_keys_older_than(0)) >= {s.blob.key for s in gateway.index.iter_instances()}


def test_a_multi_frame_object_is_archived_with_frames_predicted_from_the_previous_one(
    make_gateway: GatewayFactory, db_url: str, corpus: list[CorpusFile], tmp_path: Path
) -> None:
    rule = {"name": "mr-pred", "modality": ["MR"], "archive_codec": "pred"}
    gateway = make_gateway(db_url, archive=IDLE, policy={"rules": [rule]})
    assert gateway.archive is not None
    cine = [f for f in corpus if f.relpath == "mr/barre_mr_heart_multiframe_8bit.dcm"]
    originals = _store(gateway, cine, tmp_path)

    processed = gateway.archive.drain()

    assert [(p.outcome, p.codec) for p in processed] == [(Outcome.SWAPPED, "pred")]
    (stored,) = gateway.index.iter_instances(current_only=True)
    with gateway.blobs.open(stored.blob) as fp:
        footer, shell_start = read_footer(fp)
        assert (footer.codec_id, footer.codec_version) == ("pred", 2)
        section = Section(fp, shell_start + footer.shell_stored_length, footer.pixel_stored_length)
        container = ContainerReader(cast(BinaryIO, section))
        needs_previous = [PredCodec.references(container.payload(i)) for i in range(container.frame_count)]
    assert container.frame_count == 16 and sum(needs_previous) >= 8 and not needs_previous[0]
    assert _rebuilt(gateway) == originals
    # A viewer gets the instance back byte for byte, in the syntax it was sent in and decoded.
    original = _original(cine[0].path)[1]
    sop_class = str(pydicom.dcmread(original.path, stop_before_pixels=True).SOPClassUID)
    for syntax in {original.syntax, uid.ImplicitVRLittleEndian}:
        received = _c_get(gateway.dicom_port, _study_of(cine[0].path), {sop_class: [syntax]})
        ((got_syntax, raw),) = received.values()
        assert got_syntax == syntax
        _check_received(syntax, raw, original)
