"""Hospital B's local PACS for the demo: a storage SCP (pynetdicom) that keeps what it receives; on
TLS when the demo is (the node's context, ``dicom_listener``)."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.status import Status

from affinity_domain import dicom_listener


class LocalPacs:
    def __init__(self, ae_title: str, port: int, directory: Path):
        self.directory, self.received, self.lock = directory, {}, threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = dicom_listener.start_server(ae, ("127.0.0.1", port), [(evt.EVT_C_STORE, self._store),
                                                                           (evt.EVT_CONN_OPEN, _nodelay)])

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        path = self.directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        with self.lock:
            self.received[ds.SOPInstanceUID] = (ds.PatientID, str(getattr(ds, "IssuerOfPatientID", "")),
                                                str(getattr(ds, "AccessionNumber", "")))
        return Status.SUCCESS

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def stop(self) -> None:
        self.server.shutdown()


def _nodelay(event) -> None:
    # pynetdicom never sets TCP_NODELAY; without it each C-STORE waits ~40 ms for a delayed ACK.
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
