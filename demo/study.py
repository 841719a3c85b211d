"""A synthetic CT study, generated from pydicom's offline CT test image with fresh UIDs."""
from __future__ import annotations

import copy
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid


def ct_study(count: int, patient_id: str, issuer: str, name: str, birth_date: str, sex: str,
             accession: str, series: int = 2) -> list[Dataset]:
    template = dcmread(get_testdata_file("CT_small.dcm"))
    for keyword in ("OtherPatientIDsSequence", "OtherPatientIDs", "OtherPatientNames"):
        if keyword in template:     # the test image's own; the demo patient has none
            delattr(template, keyword)
    study_uid = generate_uid()
    series_uids = [generate_uid() for _ in range(series)]
    out = []
    for i in range(count):
        ds = copy.deepcopy(template)
        ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = patient_id, issuer, name
        ds.PatientBirthDate, ds.PatientSex = birth_date, sex
        ds.StudyInstanceUID, ds.AccessionNumber, ds.StudyID = study_uid, accession, "1"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260315"
        ds.StudyTime = "101500"
        ds.StudyDescription, ds.BodyPartExamined, ds.Modality = "CT CHEST", "CHEST", "CT"
        s = i % series
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uids[s], s + 1
        ds.InstanceNumber = i // series + 1
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def write(datasets: list[Dataset], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
