"""pacs-gateway: serve | db upgrade | verify | sweep | config | report | policy explain | archive."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from gateway import logs
from gateway.config import ConfigError, Settings, load_settings, masked_dump

log = logging.getLogger("gateway")


_CONFIG_HELP = "TOML configuration file (PACSGW_* environment variables override it)"


def _parser() -> argparse.ArgumentParser:
    # --config is accepted before or after the subcommand; SUPPRESS keeps a subcommand's
    # absent option from overwriting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=_CONFIG_HELP)
    parser = argparse.ArgumentParser(prog="pacs-gateway", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help=_CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", parents=[common], help="run the DICOM service and its HTTP side until SIGTERM/SIGINT")
    db = commands.add_parser("db", parents=[common], help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", parents=[common], help="migrate the schema to this release (Alembic head)")
    db_commands.add_parser("current", parents=[common], help="print the schema revision")
    verify = commands.add_parser("verify", parents=[common], help="rebuild stored instances and check their SHA-256")
    scope = verify.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all", action="store_true", help="every stored revision")
    scope.add_argument("--study", metavar="UID", help="one study")
    commands.add_parser("sweep", parents=[common], help="remove orphan blobs and stale spool files now")
    commands.add_parser("config", parents=[common], help="print the effective configuration (secrets masked)")
    report = commands.add_parser("report", parents=[common], help="what compression saved, per modality and codec, from the index")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the savings per modality (needs matplotlib)")
    policy = commands.add_parser("policy", parents=[common], help="the compression policy ([[policy.rules]])")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    explain = policy_commands.add_parser(
        "explain", parents=[common], help="the rule each file matches, what it does, and the measured sizes")
    explain.add_argument("files", nargs="+", type=Path, metavar="FILE")
    explain.add_argument("--calling-ae", default="", metavar="AET", help="match calling_ae rules as this AE title")
    explain.add_argument("--json", action="store_true", help="print JSON instead of a table")
    archive = commands.add_parser("archive", parents=[common], help="archive recompression of quiet series")
    archive_commands = archive.add_subparsers(dest="archive_command", required=True)
    archive_commands.add_parser("pause", parents=[common], help="stop starting new work (running servers too)")
    archive_commands.add_parser("resume", parents=[common], help="start new work again")
    archive_commands.add_parser("status", parents=[common], help="backlog, instances done and failed, bytes saved")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"pacs-gateway: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.logging.level, settings.logging.format)
    if args.command == "config":
        sys.stdout.write(masked_dump(settings))
        return 0
    if args.command == "serve":
        return _serve(settings)
    if args.command == "db":
        return _db(settings, args.db_command)
    if args.command == "verify":
        return _verify(settings, args.study)
    if args.command == "sweep":
        return _sweep(settings)
    if args.command == "report":
        return _report(settings, as_json=args.json, plot=args.plot)
    if args.command == "policy":
        return _explain(settings, args.files, calling_ae=args.calling_ae, as_json=args.json)
    if args.command == "archive":
        return _archive(settings, args.archive_command)
    return 2


def _serve(settings: Settings) -> int:
    from gateway.app import Gateway, SchemaOutOfDate
    from storage.db import IndexUnavailable

    try:
        gateway = Gateway(settings)
        gateway.start()
    except (SchemaOutOfDate, IndexUnavailable, OSError) as exc:
        log.error("cannot start", extra={"fields": {"error": str(exc)}})
        print(f"pacs-gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("stop requested", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not stop.wait(1.0):
        pass
    gateway.stop()
    return 0


def _db(settings: Settings, command: str) -> int:
    from storage.db import create_engine_for, current_revision, head_revision, upgrade_to_head

    engine = create_engine_for(settings.database_url, pool_size=1)
    try:
        if command == "upgrade":
            upgrade_to_head(engine)
            print(f"database at {current_revision(engine)} (head {head_revision()})")
        else:
            print(current_revision(engine) or "empty")
    finally:
        engine.dispose()
    return 0


def _verify(settings: Settings, study: str | None) -> int:
    from gateway.app import open_blob_store, open_database
    from gateway.services.rebuild import verify
    from storage.index import SqlIndex

    engine = open_database(settings, upgrade_empty=False)
    checked = failed = 0
    try:
        index = SqlIndex(engine)
        blobs = open_blob_store(settings, engine)
        for stored, failure in verify(index, blobs, study_instance_uid=study):
            checked += 1
            if failure is not None:
                failed += 1
                print(f"FAILED {stored.sop_instance_uid} revision {stored.revision}: {failure}")
    finally:
        engine.dispose()
    print(f"verified {checked} stored instance revisions: {checked - failed} ok, {failed} failed")
    return 1 if failed else 0


def _sweep(settings: Settings) -> int:
    from gateway.app import open_blob_store, open_database
    from storage.index import SqlIndex
    from storage.sweeper import sweep_orphans

    engine = open_database(settings, upgrade_empty=False)
    try:
        index = SqlIndex(engine)
        removed = sweep_orphans(
            index, open_blob_store(settings, engine), grace_seconds=settings.ingest.orphan_grace_seconds
        )
    finally:
        engine.dispose()
    print(f"removed {removed} orphan blobs")
    return 0


def _report(settings: Settings, *, as_json: bool, plot: Path | None) -> int:
    from gateway import report
    from gateway.app import SchemaOutOfDate, open_database
    from storage.db import IndexUnavailable

    try:
        engine = open_database(settings, upgrade_empty=False)
        try:
            summary = report.build_report(engine)
        finally:
            engine.dispose()
    except (SchemaOutOfDate, IndexUnavailable) as exc:
        print(f"pacs-gateway: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(report.as_json(summary) if as_json else report.as_table(summary))
    if plot is not None:
        try:
            report.plot_savings(summary, plot)
        except report.PlotUnavailable as exc:
            print(f"pacs-gateway: {exc}", file=sys.stderr)
            return 2
    return 0


def _explain(settings: Settings, files: list[Path], *, calling_ae: str, as_json: bool) -> int:
    from gateway import policy_explain

    rows = [policy_explain.explain(path, settings.policy.rules, calling_ae) for path in files]
    sys.stdout.write(policy_explain.as_json(rows) if as_json else policy_explain.as_table(rows))
    return 1 if any(row.rule is None for row in rows) else 0


def _archive(settings: Settings, command: str) -> int:
    from gateway.app import SchemaOutOfDate, open_database
    from storage.archive_queue import ArchiveQueue, WorkState
    from storage.db import IndexUnavailable

    try:
        engine = open_database(settings, upgrade_empty=False)
        try:
            queue = ArchiveQueue(engine)
            if command in ("pause", "resume"):
                queue.set_paused(command == "pause")
            counts = queue.counts()
        finally:
            engine.dispose()
    except (SchemaOutOfDate, IndexUnavailable) as exc:
        print(f"pacs-gateway: {exc}", file=sys.stderr)
        return 1
    if command == "status":
        states = counts.by_state
        print(f"enabled: {'yes' if settings.archive.enabled else 'no (archive.enabled = false)'}")
        print(f"paused: {'yes' if counts.paused else 'no'}")
        print(f"backlog: {counts.backlog} instances ({states[WorkState.RUNNING]} being re-encoded)")
        print(f"swapped: {states[WorkState.DONE]}, kept (archive blob not smaller): {states[WorkState.KEPT]}, "
              f"skipped: {states[WorkState.SKIPPED]}, failed: {states[WorkState.FAILED]}")
        print(f"saved: {counts.saved_bytes} bytes")
    else:
        print(f"archive recompression {'paused' if counts.paused else 'resumed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
