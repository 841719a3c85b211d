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
