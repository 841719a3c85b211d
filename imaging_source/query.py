"""Study Root C-FIND, pure: an identifier becomes match conditions on the index, and a matching
row becomes the response identifier (PS3.4 C.2.2.2: single value, list of UIDs, wildcard and
range matching; an empty key is universal matching and is returned)."""
from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from affinity_domain.exceptions import XdsiError

LEVELS = ("STUDY", "SERIES", "IMAGE")

# keyword -> (index column, lowest level the key belongs to, how it matches)
KEYS = {
    "PatientID": ("p.patient_id", "STUDY", "string"),
    "IssuerOfPatientID": ("p.issuer", "STUDY", "string"),
    "PatientName": ("p.name", "STUDY", "string"),
    "PatientBirthDate": ("p.birth_date", "STUDY", "date"),
    "PatientSex": ("p.sex", "STUDY", "string"),
    "StudyInstanceUID": ("st.study_uid", "STUDY", "uid"),
    "StudyDate": ("st.study_date", "STUDY", "date"),
    "StudyTime": ("st.study_time", "STUDY", "time"),
    "AccessionNumber": ("st.accession", "STUDY", "string"),
    "StudyID": ("st.study_id", "STUDY", "string"),
    "StudyDescription": ("st.description", "STUDY", "string"),
    "ReferringPhysicianName": ("st.referring", "STUDY", "string"),
    "ModalitiesInStudy": ("modalities", "STUDY", "contains"),
    "SeriesInstanceUID": ("se.series_uid", "SERIES", "uid"),
    "Modality": ("se.modality", "SERIES", "string"),
    "SeriesNumber": ("se.series_number", "SERIES", "string"),
    "SeriesDescription": ("se.description", "SERIES", "string"),
    "BodyPartExamined": ("se.body_part", "SERIES", "string"),
    "SOPInstanceUID": ("i.sop_uid", "IMAGE", "uid"),
    "SOPClassUID": ("i.sop_class", "IMAGE", "uid"),
    "InstanceNumber": ("i.instance_number", "IMAGE", "string"),
}
# row field -> keyword, for filling the response
ROW = {"PatientID": "patient_id", "IssuerOfPatientID": "issuer", "PatientName": "name",
       "PatientBirthDate": "birth_date", "PatientSex": "sex", "StudyInstanceUID": "study_uid",
       "StudyDate": "study_date", "StudyTime": "study_time", "AccessionNumber": "accession", "StudyID": "study_id",
       "StudyDescription": "study_description", "ReferringPhysicianName": "referring",
       "ModalitiesInStudy": "modalities", "SeriesInstanceUID": "series_uid", "Modality": "modality",
       "SeriesNumber": "series_number", "SeriesDescription": "series_description",
       "BodyPartExamined": "body_part", "SOPInstanceUID": "sop_uid", "SOPClassUID": "sop_class",
       "InstanceNumber": "instance_number", "NumberOfStudyRelatedSeries": "n_series",
       "NumberOfStudyRelatedInstances": "n_instances", "NumberOfSeriesRelatedInstances": "n_instances"}


@dataclass(frozen=True)
class Condition:
    column: str
    op: str                  # in | like | range | contains
    values: tuple


class QueryError(ValueError, XdsiError):
    """Identifier does not match SOP Class (0xA900)."""

    permanent = True


def _like(value: str) -> str:
    escaped = value.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return escaped.replace("*", "%").replace("?", "_")


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def condition(keyword: str, raw: str) -> Condition | None:
    """The condition one non-empty key asks for; None for universal matching."""
    column, _, kind = KEYS[keyword]
    value = raw.strip()
    if value in ("", "*"):
        return None
    if kind == "uid":
        return Condition(column, "in", tuple(v.strip() for v in value.split("\\") if v.strip()))
    if kind in ("date", "time") and "-" in value:
        low, _, high = value.partition("-")
        if kind == "time":       # TM range bounds compare as text once the fraction is cut
            low, high = low.split(".")[0], (high.split(".")[0] + "\uffff" if high else "")
        return Condition(column, "range", (low.strip(), high.strip()))
    if kind == "contains":
        return Condition(column, "contains", tuple(v for v in value.split("\\") if v))
    if kind == "string" and ("*" in value or "?" in value):
        return Condition(column, "like", (_like(value),))
    return Condition(column, "in", tuple(value.split("\\")) if kind == "string" else (value,))


def plan(identifier: Dataset) -> tuple[str, list[Condition]]:
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise QueryError(f"Query/Retrieve Level {level!r} is not STUDY, SERIES or IMAGE")
    depth = LEVELS.index(level)
    conditions = []
    for element in identifier:
        keyword = element.keyword
        if keyword not in KEYS:
            continue
        if LEVELS.index(KEYS[keyword][1]) > depth:
            raise QueryError(f"{keyword} is below the {level} level")
        c = condition(keyword, _text(element.value))
        if c:
            conditions.append(c)
    return level, conditions


def response(identifier: Dataset, row: dict, ae_title: str) -> Dataset:
    """The identifier with its keys filled from ``row`` (unknown keys come back empty)."""
    out = Dataset()
    for element in identifier:
        keyword = element.keyword
        if not keyword:
            continue
        if keyword in ROW and row.get(ROW[keyword]) is not None:
            value = row[ROW[keyword]]
            setattr(out, keyword, value.split("\\") if keyword == "ModalitiesInStudy" and value else
                    (int(value) if keyword.startswith("NumberOf") else value))
        elif keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            setattr(out, keyword, element.value)
        elif keyword == "RetrieveAETitle":
            out.RetrieveAETitle = ae_title
        else:
            out.add_new(element.tag, element.VR, None)
    out.QueryRetrieveLevel = identifier.QueryRetrieveLevel
    if "RetrieveAETitle" not in out:
        out.RetrieveAETitle = ae_title
    return out
