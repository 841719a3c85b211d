"""Storage Commitment Push Model at the imaging source's AE. Instances go in with DCMTK storescu;
DCMTK has no Storage Commitment SCU, so the modality here is pynetdicom: it sends the N-ACTION and
takes the N-EVENT-REPORT on the same association, or, once it has released that one, as an SCP
listening at the address the source has for its AE title."""
from __future__ import annotations

import re
import subprocess
import threading
from types import SimpleNamespace

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, StorageCommitmentPushModelInstance

from affinity_domain.dicom_status import (CLASS_INSTANCE_CONFLICT, INVALID_ARGUMENT_VALUE, NO_SUCH_ACTION,
                                          NO_SUCH_OBJECT_INSTANCE, PROCESSING_FAILURE)
from imaging_source import commitment
from tests.imaging_source import source_dicom as dd
from tests.imaging_source.test_source_durability import syscalls
from tests.services import free_port, launch

MODALITY = "MODALITY1"


@pytest.fixture(scope="module")
def committing(new_database, tmp_path_factory):
    """An imaging source that knows where the modality MODALITY1 listens for reports."""
    tmp = tmp_path_factory.mktemp("source-commitment")
    dicom, http, modality_port = free_port(), free_port(), free_port()
    settings = {"dicom_port": dicom, "port": http, "store_dir": tmp / "images", "min_free_bytes": 0,
                "quiet_seconds": 3600, "pix_port": free_port(), "network_timeout": 10,
                "commitment_retry_seconds": 0.5,
                "move_destinations": f'{{ {MODALITY} = "127.0.0.1:{modality_port}" }}'}
    proc, _ = launch("imaging-source", tmp, new_database(), settings, [dicom, http])
    yield SimpleNamespace(process=proc, dicom_port=dicom, modality_port=modality_port, tmp=tmp)
    proc.terminate()
    proc.wait(timeout=30)


def stored_instances(source, directory, n: int = 3) -> list[tuple[str, str]]:
    """Send ``n`` new CT instances with DCMTK storescu; their (SOP Class, SOP Instance) UIDs."""
    study = dd.make_study(directory, f"SC{generate_uid()[-6:]}", series=1, per_series=n)
    subprocess.run(["/usr/bin/storescu", "-aec", "XDSI_SOURCE", "127.0.0.1", str(source.dicom_port),
                    *map(str, study.files)], env=dd.ENV, check=True, capture_output=True, timeout=60)
    return [(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
            for ds in (dcmread(f, stop_before_pixels=True) for f in study.files)]


def action_information(transaction_uid: str, references) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_uid in references:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


class Reports:
    """What the modality is told: each N-EVENT-REPORT, with the association it came on."""

    def __init__(self, hold: threading.Event | None = None):
        """``hold``: the modality answers a report only once this is set."""
        self.got: list[SimpleNamespace] = []
        self.arrived = threading.Event()
        self.hold = hold
        self._threads: list[threading.Thread] = []

    def handler(self, event):
        self.got.append(SimpleNamespace(event_type=event.event_type, info=event.event_information,
                                        assoc=event.assoc, calling=event.assoc.requestor.ae_title,
                                        class_uid=event.request.AffectedSOPClassUID,
                                        instance_uid=event.request.AffectedSOPInstanceUID))
        self._threads.append(threading.current_thread())
        self.arrived.set()
        if self.hold is not None:
            self.hold.wait(60)
        return 0x0000, None

    def wait(self, timeout: float = 30) -> bool:
        """A report arrived, and pynetdicom has answered it: it serves each N-EVENT-REPORT on a thread
        of its own that, once done, marks the association's reactor as running, so releasing or
        sending on the association before that thread ends can wait forever."""
        if not self.arrived.wait(timeout):
            return False
        for thread in self._threads:
            thread.join(timeout)
        return True


def modality(port: int | None = None):
    """The modality's AE; with ``port`` it also listens there for reports on new associations
    (accepting the SCP role the source proposes)."""
    ae = AE(ae_title=MODALITY)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    return ae


def lists(info: Dataset) -> tuple[set, dict]:
    committed = {(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
                 for i in info.get("ReferencedSOPSequence") or []}
    failed = {(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)): int(i.FailureReason)
              for i in info.get("FailedSOPSequence") or []}
    return committed, failed


def test_the_source_accepts_storage_commitment_with_the_requestor_as_scu(committing):
    ae = modality()
    assoc = ae.associate("127.0.0.1", committing.dicom_port, ae_title="XDSI_SOURCE",
                         ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True)])
    try:
        assert assoc.is_established
        accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == StorageCommitmentPushModel]
        assert accepted and accepted[0].as_scu
    finally:
        assoc.release()


def test_report_on_the_same_association(committing, tmp_path):
    references = stored_instances(committing, tmp_path)
    unknown = (CTImageStorage, generate_uid())
    transaction = generate_uid()
    reports, ae = Reports(), modality()
    assoc = ae.associate("127.0.0.1", committing.dicom_port, ae_title="XDSI_SOURCE",
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
    try:
        assert assoc.is_established
        status, _ = assoc.send_n_action(action_information(transaction, references + [unknown]), 1,
                                        StorageCommitmentPushModel, StorageCommitmentPushModelInstance)
        assert status.Status == 0x0000
        assert reports.wait(), "no N-EVENT-REPORT"
    finally:
        assoc.release()
    (report,) = reports.got
    assert report.assoc is assoc
    assert (report.class_uid, report.instance_uid) == (StorageCommitmentPushModel, StorageCommitmentPushModelInstance)
    assert report.event_type == 2
    assert report.info.TransactionUID == transaction
    committed, failed = lists(report.info)
    assert committed == set(references)
    assert failed == {unknown: NO_SUCH_OBJECT_INSTANCE}
    assert report.info.RetrieveAETitle == "XDSI_SOURCE"


def test_report_on_a_new_association_once_the_modality_has_released_its_own(committing, tmp_path):
    references = stored_instances(committing, tmp_path)
    unknown = (CTImageStorage, generate_uid())
    transaction = generate_uid()
    reports, ae = Reports(), modality()
    server = ae.start_server(("127.0.0.1", committing.modality_port), block=False,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
    try:
        # No report handler on this association: a report the source sends on it before it is
        # released is refused, and the source must still deliver it on a new one.
        assoc = ae.associate("127.0.0.1", committing.dicom_port, ae_title="XDSI_SOURCE")
        assert assoc.is_established
        status, _ = assoc.send_n_action(action_information(transaction, references + [unknown]), 1,
                                        StorageCommitmentPushModel, StorageCommitmentPushModelInstance)
        assoc.release()
        assert status.Status == 0x0000
        assert reports.wait(), "no N-EVENT-REPORT on a new association"
    finally:
        server.shutdown()
    (report,) = reports.got
    assert report.assoc is not assoc and report.calling == "XDSI_SOURCE"
    scp = [cx for cx in report.assoc.accepted_contexts if cx.abstract_syntax == StorageCommitmentPushModel]
    assert scp and scp[0].as_scu, "the source did not take the SCP role (as the modality sees it, it is the SCU)"
    assert report.event_type == 2 and report.info.TransactionUID == transaction
    committed, failed = lists(report.info)
    assert committed == set(references)
    assert failed == {unknown: NO_SUCH_OBJECT_INSTANCE}


def test_all_committed_is_event_type_1_and_a_wrong_class_is_a_conflict(committing, tmp_path):
    references = stored_instances(committing, tmp_path, n=2)
    reports, ae = Reports(), modality()
    assoc = ae.associate("127.0.0.1", committing.dicom_port, ae_title="XDSI_SOURCE",
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
    try:
        for refs in (references, [(MRImageStorage, references[0][1])]):
            reports.arrived.clear()
            status, _ = assoc.send_n_action(action_information(generate_uid(), refs), 1,
                                            StorageCommitmentPushModel, StorageCommitmentPushModelInstance)
            assert status.Status == 0x0000
            assert reports.wait()
    finally:
        assoc.release()
    everything, conflict = reports.got
    assert everything.event_type == 1 and lists(everything.info) == (set(references), {})
    assert conflict.event_type == 2
    assert lists(conflict.info) == (set(), {(MRImageStorage, references[0][1]): CLASS_INSTANCE_CONFLICT})


@pytest.mark.parametrize("action_type, instance, info, expected", [
    (2, StorageCommitmentPushModelInstance, True, NO_SUCH_ACTION),
    (1, "1.2.3.4", True, NO_SUCH_OBJECT_INSTANCE),
    (1, StorageCommitmentPushModelInstance, False, INVALID_ARGUMENT_VALUE),
])
def test_a_request_it_cannot_take_is_refused_in_the_n_action_answer(committing, action_type, instance, info,
                                                                    expected):
    ds = action_information(generate_uid(), [(CTImageStorage, generate_uid())])
    if not info:
        del ds.TransactionUID
    ae = modality()
    assoc = ae.associate("127.0.0.1", committing.dicom_port, ae_title="XDSI_SOURCE")
    try:
        status, _ = assoc.send_n_action(ds, action_type, StorageCommitmentPushModel, instance)
        assert status.Status == expected
        assert assoc.is_established          # the association carries on
    finally:
        assoc.release()


# ------------------------------------------------------------ pure

def test_read_request_takes_the_references_as_sent():
    refs = [(CTImageStorage, "1.2.3.1"), (CTImageStorage, "1.2.3.2")]
    got = commitment.read_request(1, commitment.WELL_KNOWN_INSTANCE, action_information("1.2.9", refs))
    assert got == commitment.Request("1.2.9", tuple(refs))
    empty = action_information("1.2.9", [])
    assert commitment.read_request(1, commitment.WELL_KNOWN_INSTANCE, empty).status == INVALID_ARGUMENT_VALUE
    bad = action_information("not a uid", refs)
    assert commitment.read_request(1, commitment.WELL_KNOWN_INSTANCE, bad).status == INVALID_ARGUMENT_VALUE


def test_decide_names_each_failure_reason():
    refs = ((CTImageStorage, "1.2.1"), (MRImageStorage, "1.2.2"), (CTImageStorage, "1.2.3"),
            (CTImageStorage, "1.2.4"), (CTImageStorage, "../x"))
    stored = {"1.2.1": CTImageStorage, "1.2.2": CTImageStorage, "1.2.3": CTImageStorage}
    committed, failed = commitment.decide(refs, stored, on_disk={"1.2.1", "1.2.2"})
    assert committed == [(CTImageStorage, "1.2.1")]
    assert failed == [(MRImageStorage, "1.2.2", CLASS_INSTANCE_CONFLICT), (CTImageStorage, "1.2.3", PROCESSING_FAILURE),
                      (CTImageStorage, "1.2.4", NO_SUCH_OBJECT_INSTANCE), (CTImageStorage, "../x",
                                                                           NO_SUCH_OBJECT_INSTANCE)]
    event_type, ds = commitment.event_report("1.2.9", committed, failed, "XDSI_SOURCE")
    assert event_type == 2 and len(ds.ReferencedSOPSequence) == 1 and len(ds.FailedSOPSequence) == 4
    event_type, ds = commitment.event_report("1.2.9", committed, [], "XDSI_SOURCE")
    assert event_type == 1 and "FailedSOPSequence" not in ds


@pytest.fixture(scope="module")
def committing_fast(new_database, tmp_path_factory):
    """An imaging source with durability = "fast": it answers C-STOREs from the page cache."""
    tmp = tmp_path_factory.mktemp("source-commitment-fast")
    dicom, http = free_port(), free_port()
    settings = {"dicom_port": dicom, "port": http, "store_dir": tmp / "images", "min_free_bytes": 0,
                "quiet_seconds": 3600, "pix_port": free_port(), "durability": "fast"}
    proc, _ = launch("imaging-source", tmp, new_database(), settings, [dicom, http])
    yield SimpleNamespace(process=proc, dicom_port=dicom, store=tmp / "images")
    proc.terminate()
    proc.wait(timeout=30)


def test_a_fast_source_commits_only_once_the_files_are_synced(committing_fast, tmp_path):
    references = stored_instances(committing_fast, tmp_path, n=2)
    out = tmp_path / "strace.out"
    tracer = subprocess.Popen(["strace", "-f", "-yy", "-s", "4", "-e", "trace=fsync,fdatasync,sendto,sendmsg,write",
                               "-o", str(out), "-p", str(committing_fast.process.pid)],
                              stderr=subprocess.PIPE, text=True)
    reports, ae = Reports(), modality()
    try:
        assert "attached" in tracer.stderr.readline()
        assoc = ae.associate("127.0.0.1", committing_fast.dicom_port, ae_title="XDSI_SOURCE",
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
        try:
            status, _ = assoc.send_n_action(action_information(generate_uid(), references), 1,
                                            StorageCommitmentPushModel, StorageCommitmentPushModelInstance)
            assert status.Status == 0x0000
            assert reports.wait()
        finally:
            assoc.release()
    finally:
        tracer.terminate()
        tracer.wait(timeout=10)
    assert reports.got[0].event_type == 1
    calls = syscalls(out.read_text().splitlines())
    p_data = [began for began, _, name, args in calls if name in ("sendto", "sendmsg", "write")
              and f":{committing_fast.dicom_port}->" in args and '"\\4' in args]
    reported = p_data[1]                     # after the N-ACTION response: the N-EVENT-REPORT
    store = re.escape(str(committing_fast.store))
    files = [ended for _, ended, name, args in calls if name == "fsync" and re.search(rf"<{store}/[0-9a-f]{{2}}/"
                                                                                       rf"[0-9a-f]{{40}}>", args)]
    names = [ended for _, ended, name, args in calls if name == "fsync" and re.search(rf"<{store}/[0-9a-f]{{2}}>",
                                                                                       args)]
    assert len([e for e in files if e < reported]) == 2, "the committed files were not synced before the report"
    assert names and names[0] < reported, "their directory entries were not synced before the report"


def test_the_modality_may_go_on_storing_on_the_association_that_waits_for_its_report(committing, tmp_path):
    references = stored_instances(committing, tmp_path / "first")
    more = dd.make_study(tmp_path / "more", "SCMORE", series=1, per_series=20)
    stored_all = threading.Event()
    reports, ae = Reports(hold=stored_all), modality()
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", committing.dicom_port, ae_title="XDSI_SOURCE",
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
    try:
        status, _ = assoc.send_n_action(action_information(generate_uid(), references), 1,
                                        StorageCommitmentPushModel, StorageCommitmentPushModelInstance)
        assert status.Status == 0x0000
        assert reports.arrived.wait(30)
        # The source waits for the report's answer, which the modality holds back while it stores
        # 20 more instances: each C-STORE request must be served as one, not taken as that answer.
        stored = [assoc.send_c_store(dcmread(f)) for f in more.files]
        stored_all.set()
        assert [getattr(s, "Status", None) for s in stored] == [0x0000] * 20
        assert reports.wait()
        assert assoc.is_established
    finally:
        stored_all.set()
        assoc.release()
    (report,) = reports.got
    assert report.event_type == 1 and lists(report.info) == (set(references), {})
