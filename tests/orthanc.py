"""Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) as an outside DICOMweb peer, on its own ports."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.services import free_port, wait_for_port

BINARY = Path("/usr/sbin/Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def available() -> bool:
    return BINARY.exists() and PLUGIN.exists()


@dataclass
class Orthanc:
    process: subprocess.Popen
    http_port: int
    dicom_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @classmethod
    def start(cls, work: Path, servers: dict[str, str] | None = None, log=None) -> "Orthanc":
        """``servers``: DICOMweb servers Orthanc may pull from (name -> base URL)."""
        http_port, dicom_port = free_port(), free_port()
        work.mkdir(parents=True, exist_ok=True)
        config = {"Name": "xdsi-test", "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC",
                  "StorageDirectory": str(work / "store"), "IndexDirectory": str(work / "index"),
                  "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "StorageCompression": False,
                  "Plugins": [str(PLUGIN)], "HttpTimeout": 60,
                  "DicomWeb": {"Enable": True, "Root": "/dicom-web/",
                               "Servers": {k: [v.rstrip("/") + "/"] for k, v in (servers or {}).items()}}}
        path = work / "orthanc.json"
        path.write_text(json.dumps(config))
        out = log or open(work / "orthanc.log", "ab")
        proc = subprocess.Popen([str(BINARY), str(path)], stdout=out, stderr=out, env=dict(os.environ))
        wait_for_port(http_port, proc)
        wait_for_port(dicom_port, proc)
        return cls(proc, http_port, dicom_port)

    def get(self, path: str, timeout: float = 60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            data = r.read()
        return json.loads(data) if data[:1] in (b"[", b"{") else data

    def post(self, path: str, body: dict, timeout: float = 120):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as r:
            data = r.read()
        return json.loads(data) if data[:1] in (b"[", b"{") else data

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
