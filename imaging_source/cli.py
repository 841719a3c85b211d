"""``xdsi serve imaging-source`` and ``xdsi source …``: wire the DICOM and SOAP doors, the intake and
the publisher to PostgreSQL and the image store."""
from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path

from affinity_domain import audit, db, logs, serving, status
from affinity_domain.config import Config, ConfigError, build_settings
from affinity_domain.workers import Supervisor, WorkerSettings
from affinity_domain.xua import xua_settings

from . import service
from .dicomweb import door as dicomweb
from affinity_domain.content import FileStore
from .indexer import Indexer, JournalBusy, NotIndexed, open_journal
from .intake import Intake, remove as remove_from_store
from .publish import Publisher
from .settings import ImagingSourceSettings
from .store import Index

log = logging.getLogger("xdsi.imaging_source")
ACTOR = "imaging_source"      # schema and configuration section


def _open(config: Config) -> tuple[ImagingSourceSettings, FileStore, Index]:
    s = build_settings(ImagingSourceSettings, config)   # a configuration mistake stops us before anything starts
    url = db.database_url(config)
    db.migrate(url, ACTOR, "imaging_source")
    if "fsync" in config.section(ACTOR):
        log.warning("[imaging_source] fsync is no longer read: durability = \"durable\" (the default) or \"fast\"")
    content = FileStore(Path(s.store_dir or config.data_dir / "imaging-source"), s.durable, s.min_free_bytes)
    pool = db.open_pool(url, ACTOR, max_size=s.threads + 2)
    # C-STORE indexing: no test round trip before each statement (a dropped connection is retried).
    # Its commits are durable too: the journal is emptied once its lines are committed, so a commit
    # lost in a power cut after that would lose instances that were answered.
    intake = db.open_pool(url, ACTOR, max_size=s.max_associations // 2 + 1, checked=False, durable=s.durable)
    return s, content, Index(pool, intake)


class ImagingSourceActor:
    name = "imaging-source"

    def endpoints(self, config: Config) -> list[tuple[str, str]]:
        return _endpoints(build_settings(ImagingSourceSettings, config))

    def serve(self, config: Config) -> int:
        logs.setup("imaging-source")
        health = serving.observability(config.data_dir, self.name)
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)    # it logs every association at INFO
        from .dimse import DicomDoor      # pynetdicom's settings are process-wide: only the server sets them
        s, content, index = _open(config)
        workers = build_settings(WorkerSettings, config)
        content.sweep_spool()
        audit.start(config, self.name)      # no worker processes: started before the threads are
        try:
            indexer = Indexer(index, content, open_journal(content, s.durable), s.duplicate_policy)
        except JournalBusy as e:
            raise ConfigError(str(e)) from None
        # The indexer and the publisher; their state goes to the run record (xdsi status).
        supervisor = Supervisor(workers, lambda state: status.record_workers(config.data_dir, self.name, state))
        indexer.worker = supervisor.add("indexer", indexer.step, queue=indexer.depth,
                                        quarantined=indexer.quarantined)
        publisher = Publisher(index, content, s)
        supervisor.add("publisher", publisher.step, queue=index.publications_due,
                       quarantined=index.publications_quarantined)
        supervisor.start()

        def before_read():
            if not indexer.flush(s.index_wait_seconds):
                raise NotIndexed("instances received are not all indexed: "
                                 + ("the indexer is not running" if not indexer.alive()
                                    else f"not within {s.index_wait_seconds:g} s"))
        index.before_read = before_read
        sock = serving.listen(s.host, s.port)
        dicom_door = DicomDoor(index, content, Intake(index, content, s, indexer), s)
        try:
            dicom = dicom_door.start(s.dicom_host, s.dicom_port)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {s.dicom_port} on {s.dicom_host} is already in use") from None
            raise
        door = service.door(index, content, s.repository_unique_id, s.max_request_bytes, s.max_mtom_parts,
                            s.max_mtom_header_bytes, xua_settings(config, "imaging_source"), s.registry_url)
        app = serving.with_status(serving.prefix_app(dicomweb.PATH, dicomweb.app(index, content, s),
                                                     serving.path_app(s.path, door)), health)
        http = serving.http_server(app, sock, s.threads, serving.http_limits(s, s.max_request_bytes))
        health.register(supervisor.state)
        for label, where in _endpoints(s):
            log.info("listening", extra={"endpoint": label, "at": where, "store": str(content.root),
                                         "repository": s.repository_url, "pix": f"{s.pix_host}:{s.pix_port}"})
        # Stopping is bounded: what is not indexed by then stays in the journal for the next start.
        serving.run_until_stopped([http], [dicom_door.commitment.stop, dicom.shutdown,
                                           lambda: indexer.flush(workers.stop_seconds),
                                           supervisor.stop, indexer.close, index.close, health.retire,
                                           audit.stop])
        return 0

    def add_commands(self, sub) -> None:
        source = sub.add_parser("source", help="imaging source tools")
        commands = source.add_subparsers(dest="source_command", required=True)
        publish = commands.add_parser("publish", help="take in the DICOM files under DIR and publish their "
                                                      "studies now (ITI-9, manifest, RAD-68)")
        publish.add_argument("dir")
        publish.add_argument("--calling-ae", default="XDSI_CLI",
                             help="the AE title the files are taken in as (for its configured issuer)")
        publish.set_defaults(run=_publish)
        remove = commands.add_parser("remove", help="take studies, series or instances out of the index and "
                                                    "the store, as a PACS deletion: the running source then "
                                                    "republishes the study without them, or deprecates its "
                                                    "manifest (ITI-57) when nothing is left")
        what = remove.add_mutually_exclusive_group(required=True)
        for level in ("study", "series", "instance"):
            what.add_argument(f"--{level}", nargs="+", metavar="UID")
        remove.set_defaults(run=_remove)
        status = commands.add_parser("status", help="publication state of a study")
        status.add_argument("study_uid")
        status.set_defaults(run=_status)


def _endpoints(s: ImagingSourceSettings) -> list[tuple[str, str]]:
    return [("DICOM C-STORE/FIND/MOVE/GET, Storage Commitment", f"{s.ae_title}@{s.dicom_host}:{s.dicom_port}"),
            ("RAD-69 (SOAP 1.2, MTOM)", f"http://{s.host}:{s.port}{s.path}"),
            ("DICOMweb (QIDO-RS, WADO-RS, WADO-URI)", f"http://{s.host}:{s.port}{dicomweb.PATH}")]


def _publish(config: Config, args: argparse.Namespace) -> int:
    logs.setup("imaging-source", "WARNING")
    s, content, index = _open(config)
    intake = Intake(index, content, s)
    studies, failed = [], 0
    try:
        for path in sorted(p for p in Path(args.dir).rglob("*") if p.is_file()):
            status, comment = intake.accept(path.read_bytes(), args.calling_ae)
            if status != 0:
                failed += 1
                print(f"{path}: refused 0x{status:04X} {comment}", file=sys.stderr)
                continue
            from pydicom import dcmread
            uid = str(dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).StudyInstanceUID)
            if uid not in studies:
                studies.append(uid)
        publisher = Publisher(index, content, s)
        results = {uid: publisher.publish_now(uid) for uid in studies}
    finally:
        index.close()
    for uid, result in results.items():
        print(f"{uid}: {result}")
    return 1 if failed or any(not r.startswith(("published", "settled")) for r in results.values()) else 0


def _remove(config: Config, args: argparse.Namespace) -> int:
    s, content, index = _open(config)
    level, uids = next((level, uids) for level, uids in (("STUDY", args.study), ("SERIES", args.series),
                                                           ("IMAGE", args.instance)) if uids)
    try:
        files = remove_from_store(index, content, level, uids)
    finally:
        index.close()
    print(f"removed; {files} stored files deleted")
    return 0


def _status(config: Config, args: argparse.Namespace) -> int:
    s, content, index = _open(config)
    try:
        state = index.publication_state(args.study_uid)
    finally:
        index.close()
    if state is None:
        print(f"no study {args.study_uid}", file=sys.stderr)
        return 1
    for key, value in state.items():
        print(f"{key}: {value}")
    return 0


actor = ImagingSourceActor()
