"""The pynetdicom tuning: the waiting reactor is installed, and a pause request wakes it."""
from __future__ import annotations

import threading

from pynetdicom.association import Association

from affinity_domain import dicom_net


def test_the_waiting_reactor_is_installed():
    assert dicom_net.install() is True
    assert Association._run_reactor is dicom_net._reactor


def test_clearing_the_checkpoint_wakes_a_waiting_reactor():
    arrived = threading.Condition()
    checkpoint = dicom_net._Checkpoint(arrived)
    assert checkpoint.is_set()
    woke = threading.Event()

    def reactor_waiting():
        with arrived:
            arrived.wait(60)            # as long as a quiet association could wait
        woke.set()

    waiter = threading.Thread(target=reactor_waiting, daemon=True)
    waiter.start()
    while not arrived._waiters:         # until it is inside wait()
        threading.Event().wait(0.001)
    checkpoint.clear()
    assert woke.wait(10) and not checkpoint.is_set()


def test_an_encoded_instance_is_sent_as_is_or_converted():
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pynetdicom.dsutils import encode

    ds = dcmread(get_testdata_file("CT_small.dcm"))          # explicit VR little endian
    explicit = encode(ds, False, True, False)
    instance = dicom_net.EncodedInstance(explicit, ds.SOPClassUID, ds.SOPInstanceUID, "1.2.840.10008.1.2.1")
    encode_or_pass = dicom_net._encode_unless_encoded(encode)
    assert encode_or_pass(instance, False, True) is explicit
    implicit = encode_or_pass(instance, True, True)          # a peer that took implicit VR only
    assert implicit != explicit and implicit == encode(ds, True, True, False)
