"""The imaging source under bad input and faults: compressed transfer syntaxes kept as sent, an
association aborted mid-transfer, a full disk, a re-sent SOP Instance UID. Every peer is real:
DCMTK's compressors and storescu, pynetdicom as a requestor that stops mid-dataset."""
from __future__ import annotations

import os
import resource
import uuid
from io import BytesIO
from types import SimpleNamespace

import psycopg
import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage

from affinity_domain import ns
from tests.imaging_source import source_dicom as dd
from tests.services import SOURCE_PEERS, free_port, launch
from tests.imaging_source.test_source_flow import NS, rad69, state

EXPLICIT_LE = "1.2.840.10008.1.2.1"
# (DCMTK command, its options, the transfer syntax it writes, storescu's option proposing it)
COMPRESSORS = [
    ("dcmcjpeg", [], "1.2.840.10008.1.2.4.70", "-xs"),       # JPEG lossless, first-order prediction
    ("dcmcrle", [], "1.2.840.10008.1.2.5", "-xr"),           # RLE lossless
    ("dcmcjpls", [], "1.2.840.10008.1.2.4.80", "-xt"),       # JPEG-LS lossless
    ("dcmconv", ["+td"], "1.2.840.10008.1.2.1.99", "-xd"),   # deflated explicit VR little endian
]


def _retrieved(reply) -> tuple[str, dict[str, bytes], list[str]]:
    """A RAD-69 reply's status (its last word), documents by uid and the uids its errors locate."""
    status = reply.body.find("rs:RegistryResponse", NS).get("status").rsplit(":", 1)[-1]
    documents = {}
    for doc in reply.body.iterfind(f"{{{ns.XDSB}}}DocumentResponse"):
        cid = doc.find(f"{{{ns.XDSB}}}Document/{{{ns.XOP}}}Include").get("href")[4:]
        documents[doc.findtext(f"{{{ns.XDSB}}}DocumentUniqueId")] = reply.attachments[cid].path.read_bytes()
    errors = [e.get("location") for e in reply.body.iterfind(".//rs:RegistryError", NS)]
    reply.discard()
    return status, documents, errors


def _index_rows(source, study_uid: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(source.database_url) as conn:
        rows = conn.execute("SELECT i.sop_uid, i.transfer_syntax, i.sha1 FROM imaging_source.instance i "
                            "JOIN imaging_source.series se ON se.id = i.series "
                            "JOIN imaging_source.study st ON st.id = se.study WHERE st.study_uid = %s",
                            (study_uid,)).fetchall()
    return {sop: (ts, sha1) for sop, ts, sha1 in rows}


def test_compressed_instances_are_kept_and_served_as_sent(source, patient, tmp_path):
    local, _ = patient
    study = dd.make_study(tmp_path / "plain", local, series=1, per_series=len(COMPRESSORS))
    sent = {}
    for (tool, options, syntax, propose), original in zip(COMPRESSORS, study.files):
        target = tmp_path / f"{tool}.dcm"
        out = dd.run(f"/usr/bin/{tool}", *options, str(original), str(target))
        assert out.returncode == 0, out.stderr
        assert str(dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax
        sent[dcmread(target, stop_before_pixels=True).SOPInstanceUID] = (syntax, target)
        # Proposed first, so storescu sends the file as it is, compressed.
        out = dd.run("/usr/bin/storescu", propose, "-aec", "XDSI_SOURCE", "127.0.0.1", str(source.dicom_port),
                     str(target))
        assert out.returncode == 0, out.stderr
    indexed = dd.wait_until(lambda: len(rows := _index_rows(source, study.uid)) == len(sent) and rows)
    assert {sop: ts for sop, (ts, _) in indexed.items()} == {sop: ts for sop, (ts, _) in sent.items()}

    # RAD-69 asking for each stored syntax returns the bytes as sent, never decoded and re-encoded.
    series = study.series[0]
    all_syntaxes = tuple(ts for ts, _ in sent.values())
    status, returned, errors = _retrieved(rad69(source, tmp_path, study.uid, [(series, sop) for sop in sent],
                                                syntaxes=all_syntaxes))
    assert (status, errors) == ("Success", [])
    for sop, (syntax, path) in sent.items():
        got = returned[sop]
        assert str(dcmread(BytesIO(got), stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax
        sent_bytes = dd.dataset_bytes(path.read_bytes())
        # A deflated stream of odd length travels padded to even length, as DIMSE requires.
        assert dd.dataset_bytes(got) == sent_bytes + b"\0" * (len(sent_bytes) % 2)

    # Asked only for explicit little endian, each compressed instance gets its own error.
    status, returned, errors = _retrieved(rad69(source, tmp_path, study.uid, [(series, sop) for sop in sent],
                                                syntaxes=(EXPLICIT_LE,)))
    assert (status, returned) == ("Failure", {})
    assert sorted(errors) == sorted(sent)


def _store_half_then_abort(port: int, path) -> str:
    """Send a C-STORE's command and half of its dataset in small PDUs, then A-ABORT."""
    ds = dcmread(path)
    ae = AE("HALFWAY")
    ae.add_requested_context(CTImageStorage, EXPLICIT_LE)
    assoc = ae.associate("127.0.0.1", port, ae_title="XDSI_SOURCE")
    assert assoc.is_established
    context = assoc.accepted_contexts[0]
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    request.DataSet = BytesIO(dd.dataset_bytes(path.read_bytes()))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    fragments = list(message.encode_msg(context.context_id, 4096))
    assert len(fragments) > 4
    for primitive in fragments[: len(fragments) // 2]:
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        assoc.dul.socket.send(pdu.encode())
    assoc.abort()
    return str(ds.SOPInstanceUID)


def _own_source(new_database, tmp_path, domain, pix, preexec_fn=None, **settings):
    """An imaging source of the test's own, never publishing (quiet for an hour)."""
    registry, repository = domain
    dicom_port, http_port = free_port(), free_port()
    database = new_database()
    # RAD-69 asks the registry about consent: the domain's, not the default address
    settings = {"dicom_port": dicom_port, "port": http_port, "repository_url": repository.url,
                "registry_url": registry.url,
                "pix_port": pix.port, "store_dir": tmp_path / "images", "min_free_bytes": 0, "quiet_seconds": 3600,
                "peers": SOURCE_PEERS, **settings}
    proc, env = launch("imaging-source", tmp_path, database, settings, [dicom_port, http_port], preexec_fn=preexec_fn)
    proc.dicom_port, proc.database_url, proc.store = dicom_port, database, tmp_path / "images"
    proc.settings, proc.env, proc.tmp = settings, env, tmp_path
    proc.url = f"http://127.0.0.1:{http_port}/imaging-source"
    return proc


@pytest.fixture
def spooling_source(new_database, tmp_path, domain, pix):
    """An imaging source that spools received datasets to files (spool_received)."""
    proc = _own_source(new_database, tmp_path, domain, pix, spool_received="true")
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize("which", ["source", "spooling_source"])
def test_an_association_aborted_mid_transfer_stores_nothing(which, request, patient, tmp_path):
    source = request.getfixturevalue(which)
    local, _ = patient
    study = dd.make_study(tmp_path / "s", local, series=1, per_series=2)
    first, second = study.files
    assert dd.storescu(source.dicom_port, [first]).returncode == 0
    cut = _store_half_then_abort(source.dicom_port, second)
    # The SCP keeps serving, and what it had before is intact.
    assert dd.run("/usr/bin/echoscu", "-aec", "XDSI_SOURCE", "127.0.0.1", str(source.dicom_port)).returncode == 0
    rows = dd.wait_until(lambda: _index_rows(source, study.uid))
    assert cut not in rows and len(rows) == 1
    spool = source.store / "spool"
    assert dd.wait_until(lambda: not [p for p in spool.rglob("*") if p.is_file()], timeout=10)
    # The same instance sent whole afterwards is stored, and served as it was sent.
    assert dd.storescu(source.dicom_port, [second]).returncode == 0
    assert dd.wait_until(lambda: cut in _index_rows(source, study.uid))
    _, documents, _ = _retrieved(rad69(source, tmp_path, study.uid, [(study.series[0], cut)]))
    assert dd.dataset_bytes(documents[cut]) == dd.dataset_bytes(second.read_bytes())


@pytest.fixture
def cramped_source(new_database, tmp_path, domain, pix):
    """An imaging source whose files may not grow past 30 KB: RLIMIT_FSIZE stands in for a full
    disk (a write past it fails with EFBIG, as one on a full disk fails with ENOSPC)."""
    limit = 30_000

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = _own_source(new_database, tmp_path, domain, pix, preexec_fn=small_files)
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def test_a_full_disk_answers_out_of_resources_and_keeps_serving(cramped_source, tmp_path):
    big = dd.make_study(tmp_path / "big", "FULL1", series=1, per_series=1)           # 39 KB
    assert os.path.getsize(big.files[0]) > 30_000
    out = dd.run("/usr/bin/storescu", "-v", "-aec", "XDSI_SOURCE", "127.0.0.1", str(cramped_source.dicom_port),
                 str(big.files[0]))
    assert "0xa700" in (out.stdout + out.stderr).lower() or "OutOfResources" in out.stdout + out.stderr, out.stderr
    assert state(cramped_source, big.uid) == {}
    spool = cramped_source.store / "spool"
    assert not [p for p in spool.rglob("*") if p.is_file()]
    # Instances that fit are still taken.
    small = dd.make_study(tmp_path / "small", "FULL2", series=1, per_series=1,
                          edit=lambda ds: delattr(ds, "PixelData"))
    assert dd.storescu(cramped_source.dicom_port, small.files).returncode == 0
    assert dd.wait_until(lambda: state(cramped_source, small.uid).get("version", 0) >= 1)


def test_a_resent_instance_replaces_the_stored_one(source, patient, tmp_path):
    local, _ = patient
    study = dd.make_study(tmp_path / "s", local, series=1, per_series=1)
    assert dd.storescu(source.dicom_port, study.files).returncode == 0
    sop = study.sop_uids()[0]
    before = dd.wait_until(lambda: _index_rows(source, study.uid).get(sop))
    ds = dcmread(study.files[0])
    ds.SeriesDescription = f"corrected {uuid.uuid4().hex[:6]}"
    ds.save_as(study.files[0], enforce_file_format=True)
    assert dd.storescu(source.dicom_port, study.files).returncode == 0
    after = dd.wait_until(lambda: (row := _index_rows(source, study.uid).get(sop)) != before and row)
    assert after[1] != before[1]
    _, documents, _ = _retrieved(rad69(source, tmp_path, study.uid, [(study.series[0], sop)]))
    assert dd.dataset_bytes(documents[sop]) == dd.dataset_bytes(study.files[0].read_bytes())


def test_c_move_sends_stored_bytes_or_converts_for_a_peer_that_needs_it(source, patient, storescp,
                                                                        implicit_storescp, tmp_path):
    local, _ = patient
    study = dd.make_study(tmp_path / "s", local, series=1, per_series=2)
    assert dd.storescu(source.dicom_port, study.files).returncode == 0
    originals = {(ds := dcmread(p)).SOPInstanceUID: ds for p in study.files}
    for peer, destination, syntax in ((storescp, "MOVEDEST", EXPLICIT_LE),
                                      (implicit_storescp, "IMPLICITDEST", "1.2.840.10008.1.2")):
        before = set(peer.files())
        out = dd.run("/usr/bin/movescu", "-S", "-aec", "XDSI_SOURCE", "-aem", destination,
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.uid}",
                     "127.0.0.1", str(source.dicom_port))
        assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
        received = {(ds := dcmread(p)).SOPInstanceUID: ds for p in set(peer.files()) - before}
        assert set(received) == set(originals)
        for uid, ds in received.items():
            assert ds.file_meta.TransferSyntaxUID == syntax
            assert ds.PixelData == originals[uid].PixelData and ds.PatientID == originals[uid].PatientID


def test_a_dropped_database_connection_costs_no_store(source, patient, tmp_path):
    """The intake's connections are lent without a test round trip: one the server has dropped
    fails its first statement, and the store is indexed again on a fresh one."""
    local, _ = patient
    first, second = dd.make_study(tmp_path / "s", local, series=1, per_series=2).files
    assert dd.storescu(source.dicom_port, [first]).returncode == 0
    with psycopg.connect(source.database_url, autocommit=True) as conn:
        dropped = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    assert dropped >= 1
    out = dd.storescu(source.dicom_port, [second])
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
    header = dcmread(second, stop_before_pixels=True)
    assert dd.wait_until(lambda: header.SOPInstanceUID in _index_rows(source, header.StudyInstanceUID))


def test_instances_answered_before_a_kill_are_indexed_at_the_next_start(new_database, tmp_path, domain, pix):
    """A C-STORE is answered once its bytes and its intake journal line are written, before the
    index commit: killed (-9) in between, the source indexes the instances when it starts again."""
    registry, repository = domain
    database = new_database()
    dicom_port, http_port = free_port(), free_port()
    # RAD-69 asks the registry about consent: the domain's, not the default address
    settings = {"dicom_port": dicom_port, "port": http_port, "repository_url": repository.url,
                "registry_url": registry.url,
                "pix_port": pix.port, "store_dir": tmp_path / "images", "min_free_bytes": 0, "quiet_seconds": 3600}
    study = dd.make_study(tmp_path / "s", "KILLED1", series=1, per_series=3)
    source = SimpleNamespace(url=f"http://127.0.0.1:{http_port}/imaging-source", database_url=database)
    proc, _ = launch("imaging-source", tmp_path, database, settings, [dicom_port, http_port])
    try:
        with psycopg.connect(database) as held:
            # While this lock is held no instance can be indexed; the C-STOREs are answered anyway.
            held.execute("LOCK TABLE imaging_source.instance IN ACCESS EXCLUSIVE MODE")
            out = dd.storescu(dicom_port, study.files)
            assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
            proc.kill()
            proc.wait(timeout=30)
            held.rollback()
        assert _index_rows(source, study.uid) == {}
        assert (tmp_path / "images" / "intake.journal").read_bytes().count(b"\n") == 3
        proc, _ = launch("imaging-source", tmp_path, database, settings, [dicom_port, http_port])
        rows = dd.wait_until(lambda: len(rows := _index_rows(source, study.uid)) == 3 and rows)
        assert set(rows) == set(study.sop_uids())
        assert dd.wait_until(lambda: (tmp_path / "images" / "intake.journal").read_bytes() == b"")
        docs = [(study.series[0], sop) for sop in study.sop_uids()]
        status, documents, _ = _retrieved(rad69(source, tmp_path, study.uid, docs))
        assert status == "Success" and len(documents) == 3
        for path in study.files:
            sop = dcmread(path, stop_before_pixels=True).SOPInstanceUID
            assert dd.dataset_bytes(documents[sop]) == dd.dataset_bytes(path.read_bytes())
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_an_instance_the_database_refuses_costs_its_batch_nothing(new_database):
    """The indexer writes a batch in one transaction; one entry PostgreSQL refuses (a NUL in a text
    column) sends the others through one by one: they are indexed, it comes back as failed."""
    from dataclasses import replace

    from pydicom.data import get_testdata_file

    from affinity_domain import db
    from imaging_source import intake
    from imaging_source.store import Index

    url = new_database()
    db.migrate(url, "imaging_source", "imaging_source")
    index = Index(db.open_pool(url, "imaging_source", max_size=2))
    try:
        base = intake.describe(dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True),
                               EXPLICIT_LE, "MOD", {}, "1.2.3.6")
        good = [replace(base, sop_uid=f"1.2.3.{n}") for n in (1, 2)]
        bad = replace(base, sop_uid="1.2.3.9", study_uid="1.2.3.99", series_uid="1.2.3.98",
                      patient={**base.patient, "name": "Nul\x00Name"})
        entries = [(good[0], "a" * 40, 1, "MOD"), (bad, "b" * 40, 1, "MOD"), (good[1], "c" * 40, 1, "MOD")]
        outcomes = index.record_batch(entries, "replace")
        assert [o.status for o in outcomes] == ["stored", "failed", "stored"]
        found = {row["sop_uid"] for row in index.instances(sop_uids=["1.2.3.1", "1.2.3.2", "1.2.3.9"])}
        assert found == {"1.2.3.1", "1.2.3.2"}
        with pytest.raises(psycopg.DataError):        # alone, the refusal reaches the caller
            index.record(bad, "b" * 40, 1, "MOD", "replace")
    finally:
        index.close()
