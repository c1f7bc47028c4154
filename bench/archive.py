"""Archive recompression benchmark: the corpus stored at the ingest budget, then re-encoded by the
archive worker; instances per second and what it saved against the ingest-stored size.

    .venv/bin/python bench/archive.py [--corpus ../shared/corpus] [--modality CT --modality MR]
                                      [--database-url postgresql+psycopg://...] [--json]

The files (every corpus file a Storage SCU can send as it is, or those of the given modalities) go
through an in-process gateway with pynetdicom; then the archive worker runs in this process's
thread against its one niced worker process (archive.workers = 1, the default), so the rate is
that of one core. Each instance is rebuilt from its archive blob and compared with the file at the
end; the figures count only the instances the archive pass took (compressed losslessly at ingest).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pydicom  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from pynetdicom import _config as pynetdicom_config  # noqa: E402

from gateway.app import Gateway  # noqa: E402
from gateway.config import Settings  # noqa: E402
from gateway.services.rebuild import rebuild_instance  # noqa: E402
from storage.archive_queue import ArchiveQueue  # noqa: E402
from storage.models import ArchiveWork  # noqa: E402
from tests.conftest import CorpusFile, load_corpus  # noqa: E402
from tests.integration.conftest import dataset_bytes, needs_new_meta, send_files, with_file_meta  # noqa: E402


def _sendable(corpus: list[CorpusFile], modalities: set[str]) -> list[CorpusFile]:
    return [
        item for item in corpus
        if (not modalities or item.entry.get("modality") in modalities)
        and not item.needs_force
        and item.entry.get("has_pixel_data")
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", action="append", default=[], help="only these modalities (repeatable)")
    parser.add_argument("--database-url", default="", help="default: SQLite in a scratch directory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files = _sendable(load_corpus(), set(args.modality))
    # Stream each file's dataset bytes as they are, so the rebuilt instances compare byte for byte.
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    with tempfile.TemporaryDirectory(prefix="pacsgw-archive-bench-") as tmp_name:
        tmp = Path(tmp_name)
        gateway = Gateway(Settings(
            data_dir=tmp / "gw",
            dicom={"port": 0, "bind_address": "127.0.0.1"},
            http={"enabled": False},
            database={"url": args.database_url},
            archive={"quiet_seconds": 0, "poll_seconds": 3600},
            logging={"format": "text", "level": "WARNING"},
        ))
        gateway.start()
        try:
            (tmp / "meta").mkdir()
            paths = [with_file_meta(f.path, tmp / "meta") if needs_new_meta(f.path) else f.path for f in files]
            statuses = send_files(gateway.dicom_port, paths)
            stored = sum(1 for status in statuses.values() if status in (0x0000, 0xB000))
            assert gateway.archive is not None
            gateway.archive.process_one()  # start the worker process before the clock
            started = time.perf_counter()
            processed = gateway.archive.drain()
            seconds = time.perf_counter() - started
            with gateway.engine.connect() as connection:
                before = int(connection.scalar(
                    sa.select(sa.func.coalesce(sa.func.sum(ArchiveWork.size_before), 0))
                    .where(ArchiveWork.state.in_(("done", "kept")))) or 0)
            counts = ArchiveQueue(gateway.engine).counts()
            after = before - counts.saved_bytes  # a kept instance keeps its ingest blob
            mismatches = 0
            originals = {}
            for item in files:
                raw = item.path.read_bytes()
                body = dataset_bytes(item.path) if raw[128:132] == b"DICM" else raw
                originals[str(pydicom.dcmread(item.path, stop_before_pixels=True, force=True).SOPInstanceUID)] = body
            for instance in gateway.index.iter_instances(current_only=True):
                sink = io.BytesIO()
                rebuild_instance(gateway.blobs, instance, sink.write)
                if instance.sop_instance_uid in originals and sink.getvalue() != originals[instance.sop_instance_uid]:
                    mismatches += 1
        finally:
            gateway.stop()
    outcomes = collections.Counter(p.outcome for p in processed)
    codecs = collections.Counter(p.codec for p in processed if p.outcome == "swapped")
    figures = {
        "files_sent": len(files),
        "instances_stored": stored,
        "instances_archived": len(processed),
        "outcomes": dict(outcomes),
        "archive_codecs": dict(codecs),
        "seconds": round(seconds, 2),
        "instances_per_second": round(len(processed) / seconds, 2) if seconds else None,
        "ingest_stored_bytes": int(before),
        "archive_stored_bytes": after,
        "saved_percent": round(100 * (1 - after / int(before)), 2) if before else None,
        "saved_bytes": counts.saved_bytes,
        "rebuild_mismatches": mismatches,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:>22}: {value}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
