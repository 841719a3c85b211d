"""The imaging source under items it cannot handle and datasets it cannot read (issue 15, rules 4 and 5).

Every peer is real: DCMTK's storescu/findscu, pynetdicom sending bytes as crafted, PostgreSQL
refusing a row (a NUL byte, a trigger standing in for any refusal) or missing a table (a worker
that cannot run at all)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

from tests.imaging_source import source_dicom as dd
from tests.imaging_source.test_source_faults import EXPLICIT_LE, _index_rows, _own_source
from tests.imaging_source.test_source_faults import spooling_source  # noqa: F401 (a fixture)
from tests.imaging_source.test_source_flow import _rejection_note, published, state
from tests.services import launch

FAST_RESTARTS = {"XDSI_WORKERS_RESTART_SECONDS": "0.2", "XDSI_WORKERS_RESTART_MAX_SECONDS": "1",
                 "XDSI_WORKERS_CHECK_SECONDS": "0.2"}


def _log_entries(directory: Path) -> list[dict]:
    entries = []
    for path in directory.glob("imaging-source-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    pass
    return entries


def _workers(data_dir: Path) -> dict:
    try:
        return json.loads((data_dir / "run" / "imaging-source.json").read_text()).get("workers") or {}
    except (OSError, ValueError):
        return {}


def _status_line(env: dict) -> str:
    out = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "status"], env=env, capture_output=True,
                         text=True, timeout=60)
    return next((line for line in out.stdout.splitlines() if line.startswith("imaging-source")), out.stdout)


def _store_status(port: int, path: Path) -> int:
    """C-STORE of a Part-10 file's dataset bytes exactly as they are (pynetdicom sends them unread)."""
    ae = AE("CRAFTED")
    ae.add_requested_context(CTImageStorage, EXPLICIT_LE)
    chunked, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="XDSI_SOURCE")
        assert assoc.is_established
        try:
            answer = assoc.send_c_store(path)
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
    return int(answer.Status)


def _stored_files(store: Path) -> set[Path]:
    return {p for p in store.rglob("*") if p.is_file() and "spool" not in p.parts and p.suffix not in
            (".journal", ".quarantine")}


def _storescu_status(port: int, files: list[Path], calling: str = "MODALITY") -> str:
    out = dd.run("/usr/bin/storescu", "-v", "-aet", calling, "-aec", "XDSI_SOURCE", "127.0.0.1", str(port),
                 *map(str, files))
    return out.stdout + out.stderr


@pytest.fixture
def own_source(new_database, tmp_path, domain, pix, monkeypatch):
    """An imaging source of the test's own that publishes (quiet 1 s) and restarts its workers fast."""
    for key, value in FAST_RESTARTS.items():
        monkeypatch.setenv(key, value)
    proc = _own_source(new_database, tmp_path, domain, pix, quiet_seconds=1, poll_seconds=0.2, retry_seconds=1,
                       pix_host="127.0.0.1")
    yield proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- rule 4: one bad item never stops the rest


def test_a_nul_in_the_patient_name_stops_no_indexing(own_source, patient, tmp_path):
    """Issue 15, "One bad instance stopped all indexing": PostgreSQL refuses NUL in text, and the
    indexer died on it. The NUL is not indexed (the bytes are kept as sent); the instance and every
    later one are indexed and published."""
    source = own_source
    local, _ = patient
    nul = dd.make_study(tmp_path / "nul", local, series=1, per_series=1,
                        edit=lambda ds: setattr(ds, "PatientName", "Nul\0Name"))
    assert "Nul\0Name".encode() in nul.files[0].read_bytes()
    out = dd.storescu(source.dicom_port, nul.files)
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
    later = dd.make_study(tmp_path / "later", local, series=1, per_series=2)
    out = dd.storescu(source.dicom_port, later.files)
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
    assert published(source, later.uid)
    assert published(source, nul.uid)
    with psycopg.connect(source.database_url) as conn:
        name = conn.execute("SELECT p.name FROM imaging_source.patient p JOIN imaging_source.study st "
                            "ON st.patient = p.id WHERE st.study_uid = %s", (nul.uid,)).fetchone()[0]
    assert "\0" not in name and name.startswith("Nul")


def test_an_instance_the_database_refuses_is_quarantined_and_retried_at_the_next_start(own_source, patient):
    """An instance the index refuses (here a trigger; a NUL byte or any constraint alike) is
    quarantined: counted in the run record and by ``xdsi status``, logged, kept; the instances after
    it are indexed and published; a restart retries it."""
    source, tmp = own_source, own_source.tmp
    local, _ = patient
    with psycopg.connect(source.database_url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION imaging_source.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     "IF NEW.name = 'Refused^ByTheIndex' THEN RAISE EXCEPTION 'refused for the test'; END IF; "
                     "RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON imaging_source.patient "
                     "FOR EACH ROW EXECUTE FUNCTION imaging_source.refuse()")
    refused = dd.make_study(tmp / "refused", local + "R", series=1, per_series=1,
                            edit=lambda ds: setattr(ds, "PatientName", "Refused^ByTheIndex"))
    out = dd.storescu(source.dicom_port, refused.files)
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
    after = dd.make_study(tmp / "after", local, series=1, per_series=2)
    out = dd.storescu(source.dicom_port, after.files)
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
    assert published(source, after.uid)
    assert _index_rows(source, refused.uid) == {}
    indexer = dd.wait_until(lambda: (w := _workers(tmp).get("indexer")) and w["quarantined"] == 1 and w)
    assert indexer["alive"]
    line = _status_line(source.env)
    assert "quarantined: indexer 1" in line, line
    logged = [e for e in _log_entries(tmp) if e.get("msg") == "instance quarantined"]
    assert logged and logged[0]["sop_uid"] == refused.sop_uids()[0] and "refused for the test" in logged[0]["reason"]

    with psycopg.connect(source.database_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse ON imaging_source.patient")
    source.terminate()
    source.wait(timeout=30)
    again = _relaunch(source, tmp)
    try:
        assert dd.wait_until(lambda: set(_index_rows(source, refused.uid)) == set(refused.sop_uids()))
        assert dd.wait_until(lambda: (w := _workers(tmp).get("indexer")) and w["quarantined"] == 0)
    finally:
        again.terminate()
        again.wait(timeout=30)


def _relaunch(source, tmp: Path):
    """The same source (same database, store and ports) started again."""
    s = source.settings
    proc, _ = launch("imaging-source", tmp, source.database_url, s, [s["dicom_port"], s["port"]])
    return proc


def test_a_dead_indexer_is_reported_restarted_and_nothing_is_answered_for_it(own_source, patient):
    """A worker that cannot run (its table is gone) dies; it is reported (run record, ``xdsi
    status``, log) and restarted; while it is dead a C-STORE is answered with a failure, a C-FIND
    fails instead of missing instances, and an IOCM rejection fails within its timeout. Once the
    table is back the restarted indexer indexes what it was answered for, and stores succeed again."""
    source, tmp = own_source, own_source.tmp
    local, _ = patient
    study = dd.make_study(tmp / "s", local, series=1, per_series=3)
    first, second, third = study.files
    with psycopg.connect(source.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE imaging_source.instance RENAME TO instance_away")
    out = dd.storescu(source.dicom_port, [first])       # answered: its journal line is written
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
    dead = dd.wait_until(lambda: (w := _workers(tmp).get("indexer")) and not w["alive"] and w["restarts"] >= 1 and w)
    assert "instance" in dead["last_error"]
    # The run record is written every check_seconds, the health report every second: either may lead.
    assert dd.wait_until(lambda: "worker indexer is not running" in _status_line(source.env))
    assert any(e.get("msg") == "worker died; restarting it" and e.get("worker") == "indexer"
               for e in _log_entries(tmp))

    text = _storescu_status(source.dicom_port, [second])
    assert "Status: 0x110)" in text, text                   # Processing Failure
    out = dd.run("/usr/bin/findscu", "-v", "-S", "-aec", "XDSI_SOURCE", "-k", "QueryRetrieveLevel=IMAGE",
                 "-k", f"StudyInstanceUID={study.uid}", "-k", "SOPInstanceUID", "127.0.0.1", str(source.dicom_port))
    text = out.stdout + out.stderr
    final = [line for line in text.splitlines() if "Received Final Find Response" in line]
    assert final and "Success" not in final[0] and "Pending" not in text, text
    note = _rejection_note(study, [(study.series[0], "1.2.840.10008.5.1.4.1.1.2", study.sop_uids()[0])],
                           tmp / "reject.dcm")
    started = time.monotonic()
    text = _storescu_status(source.dicom_port, [note])
    assert time.monotonic() - started < 60 and "Success" not in text.split("Received Store Response")[-1], text

    with psycopg.connect(source.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE imaging_source.instance_away RENAME TO instance")
    assert dd.wait_until(lambda: (w := _workers(tmp).get("indexer")) and w["alive"])
    assert dd.wait_until(lambda: set(_index_rows(source, study.uid)) == {study.sop_uids()[0]})
    out = dd.storescu(source.dicom_port, [second, third])
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
    assert dd.wait_until(lambda: len(_index_rows(source, study.uid)) == 3)


def test_a_source_whose_indexer_is_dead_stops_when_asked(own_source, patient):
    """``xdsi up`` gives an actor 15 s after SIGTERM, then kills it: a dead indexer must not hold the
    stop. What it was answered for stays in the journal and is indexed at the next start."""
    source, tmp = own_source, own_source.tmp
    local, _ = patient
    study = dd.make_study(tmp / "s", local, series=1, per_series=1)
    with psycopg.connect(source.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE imaging_source.instance RENAME TO instance_away")
    out = dd.storescu(source.dicom_port, study.files)
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
    assert dd.wait_until(lambda: (w := _workers(tmp).get("indexer")) and not w["alive"])
    source.send_signal(signal.SIGTERM)
    source.wait(timeout=14)
    with psycopg.connect(source.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE imaging_source.instance_away RENAME TO instance")
    again = _relaunch(source, tmp)
    try:
        assert dd.wait_until(lambda: set(_index_rows(source, study.uid)) == set(study.sop_uids()))
    finally:
        again.terminate()
        again.wait(timeout=30)


# ---------------------------------------------------------------- rule 5: what cannot be read is refused


def _cut_inside_pixel_data(dataset: bytes) -> bytes:
    return dataset[: len(dataset) - 1000]                 # Pixel Data's length now runs past the end


def _cut_inside_an_element_header(dataset: bytes) -> bytes:
    at = dataset.find(b"\xe0\x7f\x10\x00OW")              # (7FE0,0010) Pixel Data, the last element
    assert at > 0
    return dataset[: at + 6]                              # tag and VR, no length: a header cut short


@pytest.mark.parametrize("which", ["source", "spooling_source"])
@pytest.mark.parametrize("cut", [_cut_inside_pixel_data, _cut_inside_an_element_header])
def test_a_dataset_that_cannot_be_read_is_refused_and_not_stored(which, cut, request, patient, tmp_path):
    """Issue 15, "Broken DICOM accepted": stored with 0x0000 before; now 0xC000 and nothing kept."""
    source = request.getfixturevalue(which)
    local, _ = patient
    study = dd.make_study(tmp_path / "s", local, series=1, per_series=1)
    data = study.files[0].read_bytes()
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(data[:meta_end] + cut(data[meta_end:]))
    before = _stored_files(source.store)
    assert _store_status(source.dicom_port, broken) == 0xC000
    assert _stored_files(source.store) == before
    assert state(source, study.uid) == {}
    # The whole instance is still taken.
    assert _store_status(source.dicom_port, study.files[0]) == 0x0000
    assert dd.wait_until(lambda: _index_rows(source, study.uid))


# ---------------------------------------------------------------- rule 5: patients kept apart


def test_an_instance_of_another_patient_is_refused_from_a_study(source, patient, tmp_path):
    """Issue 15, "Patients mixed": an instance of INTRUDER sent into another patient's study was
    indexed under that patient. Refused now (same id with another issuer too), and logged, without the ids."""
    local, _ = patient
    study = dd.make_study(tmp_path / "s", local, series=1, per_series=2)
    assert dd.storescu(source.dicom_port, study.files).returncode == 0
    assert published(source, study.uid)
    for n, (pid, issuer) in enumerate([("INTRUDER", dd.LOCAL_ISSUER), (local, "1.3.6.1.4.1.21367.2005.13.20.9999")]):
        (tmp_path / f"intruder{n}").mkdir()
        intruder = dd.add_series(dd.Study(study.uid, pid, study.accession, tmp_path / f"intruder{n}"),
                                 per_series=1, issuer=issuer)
        text = _storescu_status(source.dicom_port, intruder.files[-1:])
        assert "Success" not in text.split("Received Store Response")[-1], text
        assert not set(intruder.sop_uids()) & set(_index_rows(source, study.uid))
        refusal = dd.wait_until(lambda: [e for e in _log_entries(source.tmp)
                                         if e.get("msg", "").startswith("instance refused: its study belongs")
                                         and e.get("sop_uid") == intruder.sop_uids()[-1]])
        # Issue 16: the log says which study refused what; the patients are the audit trail's to name.
        assert refusal[0]["study"] == study.uid
        assert pid not in json.dumps(refusal[0]) and local not in json.dumps(refusal[0])
    assert set(_index_rows(source, study.uid)) == set(study.sop_uids())


def test_a_matching_instance_does_not_overwrite_the_patient_name(source, patient, tmp_path):
    """Issue 15, "Any C-STORE also overwrites the stored patient name". Demographics are not
    updated in passing (there is no explicit update yet: they stay as first received)."""
    local, _ = patient
    study = dd.make_study(tmp_path / "s", local, series=1, per_series=1)
    assert dd.storescu(source.dicom_port, study.files).returncode == 0
    renamed = dd.make_study(tmp_path / "t", local, series=1, per_series=1,
                            edit=lambda ds: setattr(ds, "PatientName", "Other^Name"))
    assert dd.storescu(source.dicom_port, renamed.files).returncode == 0
    assert dd.wait_until(lambda: _index_rows(source, renamed.uid))
    with psycopg.connect(source.database_url) as conn:
        names = conn.execute("SELECT name FROM imaging_source.patient WHERE patient_id = %s", (local,)).fetchall()
    assert names == [("Test^Patient",)]


def test_an_empty_patient_id_is_taken_and_its_study_waits_unpublished(source, tmp_path):
    """Patient ID is Type 2: empty is valid DICOM. The instance is taken (not 0xA900) and its study
    waits, unpublished, with the reason in the index and the log."""
    study = dd.make_study(tmp_path / "s", "", series=1, per_series=1)
    assert dcmread(study.files[0]).PatientID == ""
    out = dd.storescu(source.dicom_port, study.files)
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
    held = dd.wait_until(lambda: (s := state(source, study.uid)) and s["last_error"] and s)
    assert "Patient ID" in held["last_error"] and held["published_version"] == 0 and held["manifests"] == []
    assert any(e.get("msg") == "publication held" and e.get("study") == study.uid and "Patient ID" in e["reason"]
               for e in _log_entries(source.tmp))


def test_a_replaced_instance_is_logged_with_both_hashes(source, patient, tmp_path):
    local, _ = patient
    study = dd.make_study(tmp_path / "s", local, series=1, per_series=1)
    assert dd.storescu(source.dicom_port, study.files).returncode == 0
    sop = study.sop_uids()[0]
    before = dd.wait_until(lambda: _index_rows(source, study.uid).get(sop))[1]
    ds = dcmread(study.files[0])
    ds.SeriesDescription = "corrected"
    ds.save_as(study.files[0], enforce_file_format=True)
    assert dd.storescu(source.dicom_port, study.files).returncode == 0
    after = dd.wait_until(lambda: (row := _index_rows(source, study.uid).get(sop)) and row[1] != before and row)[1]
    logged = dd.wait_until(lambda: [e for e in _log_entries(source.tmp)
                                    if e.get("msg") == "instance replaced" and e.get("sop_uid") == sop])
    assert (logged[0]["replaced_sha1"], logged[0]["sha1"]) == (before, after)


def test_a_study_the_publisher_cannot_publish_is_quarantined_and_the_others_published(
        new_database, tmp_path, domain, pix, patient, monkeypatch):
    """A study whose publication fails by an error of ours (here its stored file is gone) is
    quarantined: counted in the run record, its reason on the study; the next study is published."""
    for key, value in FAST_RESTARTS.items():
        monkeypatch.setenv(key, value)
    source = _own_source(new_database, tmp_path, domain, pix, quiet_seconds=3, poll_seconds=0.2, retry_seconds=1,
                         pix_host="127.0.0.1")
    try:
        local, _ = patient
        broken = dd.make_study(tmp_path / "broken", local, series=1, per_series=1)
        assert dd.storescu(source.dicom_port, broken.files).returncode == 0
        sha1 = dd.wait_until(lambda: _index_rows(source, broken.uid))[broken.sop_uids()[0]][1]
        [stored] = [p for p in source.store.rglob(sha1)]
        stored.unlink()
        fine = dd.make_study(tmp_path / "fine", local, series=1, per_series=1)
        assert dd.storescu(source.dicom_port, fine.files).returncode == 0
        assert published(source, fine.uid)
        publisher = dd.wait_until(lambda: (w := _workers(tmp_path).get("publisher")) and w["quarantined"] == 1 and w)
        assert publisher["alive"]
        assert "FileNotFoundError" in state(source, broken.uid)["last_error"]
        assert "quarantined: publisher 1" in _status_line(source.env)
    finally:
        source.terminate()
        source.wait(timeout=30)
