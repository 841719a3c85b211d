"""Access control at the imaging source's DICOM door (issue 16): configured peers, roles, and the
refusals, with DCMTK's echoscu/storescu/findscu/movescu/getscu as the outside peers.

The source of this module listens on every address, so a peer can reach it over loopback and over
the machine's own non-loopback address (which the source sees as a remote host)."""
from __future__ import annotations


import pytest

from tests.imaging_source import source_dicom as dd
from tests.imaging_source.test_source_faults import _index_rows
from tests.imaging_source.test_source_flow import _rejection_note
from tests.imaging_source.test_source_hardening import _log_entries
from tests.services import free_port, launch, own_address, wait_until

PEERS = ('{ FINDER = { ae_title = "FINDER", roles = ["query"] }, '
         'STORER = { ae_title = "STORER", roles = ["store"] }, '
         'EDITOR = { ae_title = "EDITOR", roles = ["store", "replace"] }, '
         'REMOTE = { ae_title = "REMOTE_QR", hosts = ["%s"], roles = ["query"] }, '
         'KEEPER = { ae_title = "KEEPER", roles = ["store", "reject"] } }')


@pytest.fixture(scope="module")
def guarded(new_database, tmp_path_factory, domain, pix):
    _, repository = domain
    tmp = tmp_path_factory.mktemp("guarded-source")
    dicom_port, http_port = free_port(), free_port()
    remote = own_address() or "192.0.2.254"
    database = new_database()
    proc, env = launch("imaging-source", tmp, database, {
        "dicom_host": "0.0.0.0", "dicom_port": dicom_port, "port": http_port, "repository_url": repository.url,
        "pix_port": pix.port, "store_dir": tmp / "images", "min_free_bytes": 0, "quiet_seconds": 3600,
        "peers": PEERS % remote}, [dicom_port, http_port],
        env={"XDSI_TLS_ALLOW_PLAINTEXT": "true"})      # a plain listener off loopback, for this test
    proc.dicom_port, proc.remote, proc.tmp, proc.database_url = dicom_port, own_address(), tmp, database
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def _out(p) -> str:
    return p.stdout + p.stderr


def _not_authorized(out: str) -> bool:
    """A final response of status 0124H, Refused: Not Authorized (DCMTK names it for some services only)."""
    low = out.lower()
    return "0x124)" in low or "0x0124" in low or "not authorized" in low


def _store(port: int, files, calling: str):
    return dd.run("/usr/bin/storescu", "-v", "-aet", calling, "-aec", "XDSI_SOURCE", "127.0.0.1", str(port),
                  *map(str, files))


def _find(port: int, calling: str, host: str = "127.0.0.1", *keys: str):
    return dd.run("/usr/bin/findscu", "-v", "-S", "-aet", calling, "-aec", "XDSI_SOURCE", "-k",
                  "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientID=*",
                  *(a for k in keys for a in ("-k", k)), host, str(port))


def test_an_unknown_calling_ae_from_another_host_is_rejected_at_association(guarded):
    if guarded.remote is None:
        pytest.skip("this machine has no non-loopback address")
    out = _out(dd.run("/usr/bin/echoscu", "-v", "-aet", "STRANGER", "-aec", "XDSI_SOURCE", guarded.remote,
                      str(guarded.dicom_port)))
    assert "Association Rejected" in out, out
    assert "Rejected Permanent" in out and "Service User" in out and "Calling AE Title Not Recognized" in out, out


def test_a_configured_peer_from_its_own_host_is_admitted_and_another_host_is_not(guarded):
    if guarded.remote is None:
        pytest.skip("this machine has no non-loopback address")
    ok = _out(_find(guarded.dicom_port, "REMOTE_QR", guarded.remote))
    assert "Association Accepted" in ok and "Association Rejected" not in ok, ok
    # FINDER's hosts are loopback's (the default): from the machine's own address it is a stranger.
    out = _out(_find(guarded.dicom_port, "FINDER", guarded.remote))
    assert "Calling AE Title Not Recognized" in out, out


def test_a_peer_is_known_by_its_certificate_subject_too():
    from affinity_domain import access
    peers = access.dicom_peers({"TLS": {"ae_title": "PACS", "subject": "CN=pacs,O=Hospital",
                                        "roles": ["query"]}}, "imaging_source")
    assert access.admit_peer(peers, frozenset(), "PACS", "127.0.0.1", "CN=pacs,O=Hospital").may("query")
    assert access.admit_peer(peers, frozenset(), "PACS", "127.0.0.1", "CN=evil,O=Hospital") is None
    assert access.admit_peer(peers, frozenset(), "PACS", "127.0.0.1", None) is None


def test_an_unknown_calling_ae_on_loopback_may_store_only(guarded, patient, tmp_path):
    local, _ = patient
    study = dd.make_study(tmp_path, local, series=1, per_series=1)
    stored = _out(_store(guarded.dicom_port, study.files, "NOBODY"))
    assert "Received Store Response (Success)" in stored, stored
    found = _out(_find(guarded.dicom_port, "NOBODY"))
    assert "Association Accepted" in found, found
    assert _not_authorized(found), found
    assert study.uid not in found
    moved = _out(dd.run("/usr/bin/movescu", "-v", "-S", "-aet", "NOBODY", "-aec", "XDSI_SOURCE", "-aem", "MOVEDEST",
                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.uid}", "127.0.0.1",
                        str(guarded.dicom_port)))
    assert _not_authorized(moved), moved
    got = tmp_path / "got"
    got.mkdir()
    gotten = _out(dd.run("/usr/bin/getscu", "-v", "-S", "-aet", "NOBODY", "-aec", "XDSI_SOURCE", "-od", str(got),
                         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.uid}", "127.0.0.1",
                         str(guarded.dicom_port)))
    assert _not_authorized(gotten), gotten
    assert not list(got.iterdir())


def test_query_needs_the_role_query_and_store_the_role_store(guarded, patient, tmp_path):
    local, _ = patient
    study = dd.make_study(tmp_path, local, series=1, per_series=1)
    assert "Success" in _out(_store(guarded.dicom_port, study.files, "KEEPER"))
    found = wait_until(lambda: (o := _out(_find(guarded.dicom_port, "FINDER", "127.0.0.1",
                                                f"StudyInstanceUID={study.uid}"))) and study.uid in o and o)
    assert "Not Authorized" not in found
    # KEEPER may store and reject, not query; FINDER may query, not store.
    refused = _out(_find(guarded.dicom_port, "KEEPER", "127.0.0.1", f"StudyInstanceUID={study.uid}"))
    assert _not_authorized(refused), refused
    other = dd.make_study(tmp_path / "other", local, series=1, per_series=1)
    out = _out(_store(guarded.dicom_port, other.files, "FINDER"))
    assert _not_authorized(out), out


def test_an_iocm_rejection_note_needs_the_role_reject(guarded, patient, tmp_path):
    local, _ = patient
    study = dd.make_study(tmp_path, local, series=1, per_series=2)
    assert "Success" in _out(_store(guarded.dicom_port, study.files, "KEEPER"))
    sop = study.sop_uids()[0]
    note = _rejection_note(study, [(study.series[0], "1.2.840.10008.5.1.4.1.1.2", sop)], tmp_path / "note.dcm")
    refused = _out(_store(guarded.dicom_port, [note], "NOBODY"))      # loopback: store only
    assert _not_authorized(refused), refused

    def image_level(calling):
        return _out(dd.run("/usr/bin/findscu", "-v", "-S", "-aet", calling, "-aec", "XDSI_SOURCE", "-k",
                           "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study.uid}", "-k",
                           f"SeriesInstanceUID={study.series[0]}", "-k", "SOPInstanceUID", "127.0.0.1",
                           str(guarded.dicom_port)))
    assert sop in image_level("FINDER")                                   # still there
    applied = _out(_store(guarded.dicom_port, [note], "KEEPER"))
    assert "Received Store Response (Success)" in applied, applied
    wait_until(lambda: sop not in image_level("FINDER"))


def test_replacing_an_instance_needs_the_role_replace_or_reject(guarded, patient, tmp_path):
    from pydicom import dcmread
    local, _ = patient
    study = dd.make_study(tmp_path, local, series=1, per_series=1)
    assert "Received Store Response (Success)" in _out(_store(guarded.dicom_port, study.files, "STORER"))
    sop = study.sop_uids()[0]
    first = wait_until(lambda: _index_rows(guarded, study.uid).get(sop))
    ds = dcmread(study.files[0])
    ds.SeriesDescription = "changed by a peer that may only store"
    ds.save_as(study.files[0], enforce_file_format=True)
    _store(guarded.dicom_port, study.files, "STORER")
    wait_until(lambda: [e for e in _log_entries(guarded.tmp) if e.get("sop_uid") == sop and
                        "may not replace" in e.get("msg", "")])
    assert _index_rows(guarded, study.uid)[sop] == first                  # the stored instance stays
    ds.SeriesDescription = "corrected by a peer that may replace"
    ds.save_as(study.files[0], enforce_file_format=True)
    assert "Received Store Response (Success)" in _out(_store(guarded.dicom_port, study.files, "EDITOR"))
    wait_until(lambda: _index_rows(guarded, study.uid)[sop] != first)


def test_peer_configuration_mistakes_are_refused_with_their_key():
    from affinity_domain import access
    from affinity_domain.config import ConfigError
    for table, word in (({"ae_title": "X", "roles": ["delete"]}, "roles"),
                        ({"ae_title": "X", "hosts": ["not an address"]}, "hosts"),
                        ({"ae_title": "X", "role": ["store"]}, "role"),
                        ({"ae_title": "A" * 17}, "ae_title")):
        with pytest.raises(ConfigError, match=word):
            access.dicom_peers({"P": table}, "imaging_source")
    assert access.admit_peer(access.dicom_peers({"P": {"ae_title": "X", "hosts": ["10.1.0.0/16"],
                                                       "roles": ["query"]}}, "s"),
                             frozenset(), "X", "10.1.2.3").may("query")

