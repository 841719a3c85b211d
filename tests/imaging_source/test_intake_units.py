"""Intake's pure parts for issue 15: what cannot be read, empty Patient IDs, NUL bytes, the patient a
study belongs to, the quarantine file, and which index errors are an entry's own."""
from __future__ import annotations

import threading

import psycopg
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from affinity_domain import part10
from affinity_domain.dicom_status import DATA_SET_DOES_NOT_MATCH_SOP_CLASS
from imaging_source import indexer, intake
from imaging_source.identity import LocalIdentity, PatientConflict, text
from imaging_source.store import refused_entry
from tests.imaging_source import source_dicom as dd

A, B = LocalIdentity("A1", "1.2.3"), LocalIdentity("B1", "1.2.3")


def _part10(tmp_path, **changes) -> bytes:
    study = dd.make_study(tmp_path, "P1", series=1, per_series=1,
                          edit=lambda ds: [setattr(ds, k, v) for k, v in changes.items()])
    return study.files[0].read_bytes()


def test_a_dataset_that_does_not_read_to_its_end_is_unreadable(tmp_path):
    data = _part10(tmp_path)
    assert intake.index_header(data).PatientID == "P1"
    for cut in (len(data) - 1000, data.find(b"\xe0\x7f\x10\x00OW") + 6, len(data) - 1):
        with pytest.raises(part10.Unreadable):
            intake.index_header(data[:cut])
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:-1000])
    with pytest.raises(part10.Unreadable):           # a spooled file is walked the same way
        intake.index_header(path)
    path.write_bytes(b"")
    with pytest.raises(part10.Unreadable):
        intake.index_header(path)


def test_an_empty_patient_id_is_taken_a_missing_one_is_not():
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    ds.PatientID = ""
    got = intake.describe(ds, "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6")
    assert isinstance(got, intake.Received) and got.identity == LocalIdentity("", "1.2.3.6")
    del ds.PatientID
    refused = intake.describe(ds, "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6")
    assert refused.status == DATA_SET_DOES_NOT_MATCH_SOP_CLASS and "PatientID" in refused.reason


def test_nul_bytes_are_not_index_text():
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    ds.PatientName, ds.PatientID = "Nul\0Name\0", "ID\0"
    got = intake.describe(ds, "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6")
    assert got.patient["name"] == "NulName" and got.identity.patient_id == "ID"
    assert text(None) == "" and text(" x\0 ") == "x"


def test_a_study_keeps_its_patient():
    index, answered = {}, {}
    patients = intake.StudyPatients(index.get, 2, lambda: index.update(answered))   # settle: indexed now
    assert patients.claim("s1", A) is None                 # new: A's from now on
    answered["s1"] = A
    assert patients.claim("s1", A) is None
    assert patients.claim("s1", B) == A                     # asked the index again, once A's were indexed
    index["s2"] = B                                         # indexed as B's by an earlier process
    assert patients.claim("s2", A) == B
    patients.claim("s3", A)
    patients.claim("s4", A)                                 # s1 is forgotten (2 at most)...
    index["s1"] = A
    assert patients.claim("s1", B) == A                     # ...and looked up in the index


def test_a_study_removed_since_is_free_for_another_patient():
    patients = intake.StudyPatients(lambda uid: None, 10)
    assert patients.claim("s1", A) is None
    assert patients.claim("s1", B) is None                  # the index no longer has anything of A's


def test_an_index_that_does_not_answer_costs_no_store():
    def down(uid):
        raise psycopg.OperationalError("connection refused")
    patients = intake.StudyPatients(down, 10)
    assert patients.claim("s1", A) is None
    assert patients.claim("s1", B) == A                     # what intake took is still known


def test_concurrent_first_instances_of_a_study_are_one_patient_s():
    patients = intake.StudyPatients(lambda uid: None, 10)
    outcomes = []
    threads = [threading.Thread(target=lambda p=p: outcomes.append(patients.claim("s", p))) for p in (A, B) * 20]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert None in outcomes and patients._known["s"] in (A, B)


def test_quarantined_lines_come_back_into_the_journal_at_the_next_start(tmp_path):
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    got = intake.describe(ds, "1.2.840.10008.1.2.1", "MOD", {}, "1.2.3.6")
    journal = indexer.Journal(tmp_path / "intake.journal", fsync=False)
    line = indexer.encode_line(got, "a" * 40, 1, "MOD")
    assert journal.quarantine.add(line, "DataError: refused") == 1
    assert journal.quarantine.count == 1 and b"DataError: refused" in (tmp_path / "intake.quarantine").read_bytes()
    journal.close()
    again = indexer.Journal(tmp_path / "intake.journal", fsync=False)
    assert [e[1] for e in again.left_over] == ["a" * 40] and again.quarantine.count == 0
    assert not (tmp_path / "intake.quarantine").exists()
    again.close()


def test_which_index_errors_are_the_entry_s_own():
    assert refused_entry(psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"))
    assert refused_entry(psycopg.IntegrityError("duplicate key"))
    assert refused_entry(PatientConflict(A, B, "1.2.3.4"))
    assert refused_entry(ValueError("bad value"))
    assert not refused_entry(psycopg.OperationalError("server closed the connection"))
    assert not refused_entry(psycopg.ProgrammingError("relation instance does not exist"))
    assert not refused_entry(AttributeError("a bug of ours"))
