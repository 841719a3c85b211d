"""DICOM test material and peers: studies made from pydicom's CT test file with fresh uids, and
DCMTK's tools (called by absolute path: the venv's pynetdicom installs scripts of the same names)."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.services import StoreScp, free_port, wait_for_port, wait_until  # noqa: F401

LOCAL_ISSUER = "1.3.6.1.4.1.21367.2005.13.20.3000"
ENV = dict(os.environ, TCP_NODELAY="1")
CT = get_testdata_file("CT_small.dcm")


@dataclass
class Study:
    uid: str
    patient_id: str
    accession: str
    directory: Path
    files: list[Path] = field(default_factory=list)
    series: list[str] = field(default_factory=list)

    def sop_uids(self) -> list[str]:
        return [dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in self.files]


def make_study(directory: Path, patient_id: str, series: int = 2, per_series: int = 3, accession: str | None = None,
               issuer: str | None = LOCAL_ISSUER, study_uid: str | None = None, modality: str = "CT",
               body_part: str = "CHEST", edit=None) -> Study:
    directory.mkdir(parents=True, exist_ok=True)
    study = Study(study_uid or generate_uid(), patient_id, accession if accession is not None else
                  f"ACC{generate_uid()[-8:]}", directory)
    return add_series(study, series, per_series, issuer, modality, body_part, edit)


def add_series(study: Study, series: int = 1, per_series: int = 3, issuer: str | None = LOCAL_ISSUER,
               modality: str = "CT", body_part: str = "CHEST", edit=None) -> Study:
    for s in range(series):
        series_uid = generate_uid()
        study.series.append(series_uid)
        for i in range(per_series):
            ds = dcmread(CT)
            del ds[0xFFFCFFFC]     # storescu drops Data Set Trailing Padding; without it the bytes sent are the file's
            ds.PatientID = study.patient_id
            if issuer:
                ds.IssuerOfPatientID = issuer
            ds.PatientName = "Test^Patient"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study.uid, series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.AccessionNumber = study.accession
            ds.Modality, ds.BodyPartExamined = modality, body_part
            ds.SeriesNumber, ds.InstanceNumber = len(study.series), i + 1
            ds.StudyDescription = "CT chest"
            if edit:
                edit(ds)
            path = study.directory / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            study.files.append(path)
    return study


def dataset_bytes(data: bytes) -> bytes:
    """A Part-10 file's bytes after its File Meta Information (what travels over DIMSE)."""
    assert data[128:132] == b"DICM"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length:]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=ENV, capture_output=True, text=True, timeout=timeout)


def storescu(port: int, files: list[Path], calling: str = "MODALITY") -> subprocess.CompletedProcess:
    return run("/usr/bin/storescu", "-aet", calling, "-aec", "XDSI_SOURCE", "127.0.0.1", str(port),
               *map(str, files))


def dciodvfy_errors(path: Path) -> list[str]:
    out = run("/usr/bin/dciodvfy", str(path))
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


