"""QIDO-RS (PS3.18 10.6), pure: a search URL's parameters become match conditions on the index, and
matching rows become the PS3.18 F.2 JSON model.

Matching is C-FIND's (``query.condition``: single value, UID list, wildcard, range); a UID list may be
separated by commas too, every UID is checked, and ``fuzzymatching=true`` makes PatientName and
ReferringPhysicianName match names whose components begin with the words given, in any case."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from ..query import KEYS, LEVELS, ROW, Condition, condition
from .errors import bad, checked_uid

# resource -> index level
LEVEL = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}
# what each level returns by default (PS3.18 Table 10.6.3-3/-4/-5), besides RetrieveURL
DEFAULTS = {
    "STUDY": ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
              "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "SERIES": ("Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
               "NumberOfSeriesRelatedInstances"),
    "IMAGE": ("SOPClassUID", "SOPInstanceUID", "InstanceNumber", "AvailableTransferSyntaxUID"),
}
EXTRA = {"STUDY": ("StudyDescription", "IssuerOfPatientID"), "SERIES": ("BodyPartExamined",), "IMAGE": ()}
# counts that belong to one level only (the index computes n_instances per row's level)
_ONLY = {"NumberOfStudyRelatedSeries": "STUDY", "NumberOfStudyRelatedInstances": "STUDY",
         "ModalitiesInStudy": "STUDY", "NumberOfSeriesRelatedInstances": "SERIES"}
_RESERVED = {"limit", "offset", "fuzzymatching", "includefield", "emptyvaluematching", "orderby"}
_NUMBER_VRS = {"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"}
_NAME_KEYS = {"PatientName", "ReferringPhysicianName"}
_ROW = {**ROW, "AvailableTransferSyntaxUID": "transfer_syntax"}


@dataclass
class Search:
    level: str
    conditions: list[Condition]
    fields: list[str]              # keywords returned, in tag order
    limit: int
    offset: int
    warnings: list[str] = field(default_factory=list)


def keyword(name: str) -> str:
    """An attribute as a keyword, from its keyword or its tag in hex (``0010,0020`` or ``00100020``)."""
    text = name.replace(",", "").strip()
    if re.fullmatch(r"[0-9A-Fa-f]{8}", text):
        found = keyword_for_tag(int(text, 16))
        if found:
            return found
    elif tag_for_keyword(text) is not None:
        return text
    raise bad(f"{name!r} is not a DICOM attribute keyword or tag")


def _count(value: str, name: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise bad(f"{name} must be a whole number, not {value!r}")
    return int(value)


def _levels_of(level: str, fixed: dict[str, str]) -> list[str]:
    """The levels whose attributes a search at ``level`` matches and returns (a study or series
    named in the path is not repeated)."""
    upto = LEVELS[: LEVELS.index(level) + 1]
    if "StudyInstanceUID" in fixed:
        upto = [lv for lv in upto if lv != "STUDY"] or ["STUDY"]
    if "SeriesInstanceUID" in fixed:
        upto = [lv for lv in upto if lv != "SERIES"] or ["SERIES"]
    return upto


def parse(resource: str, fixed: dict[str, str], params: list[tuple[str, str]], max_results: int) -> Search:
    """``resource``: studies | series | instances; ``fixed``: the StudyInstanceUID/SeriesInstanceUID the
    path names; ``params``: the query string's pairs, in order."""
    level = LEVEL[resource]
    depth = LEVELS.index(level)
    conditions = [Condition(KEYS[k][0], "in", (checked_uid(v, k),)) for k, v in fixed.items()]
    settings = {k: v for k, v in params if k in _RESERVED and k != "includefield"}
    fuzzy = settings.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise bad(f"fuzzymatching must be true or false, not {fuzzy!r}")
    included, everything, matched, warnings = [], False, [], []
    for name, value in params:
        if name == "includefield":
            for item in filter(None, (v.strip() for v in value.split(","))):
                if item == "all":
                    everything = True
                else:
                    included.append(keyword(item))
            continue
        if name in _RESERVED:
            continue
        key = keyword(name)
        if key not in KEYS:
            # PS3.18 10.6.1.3.1: a key not supported for matching is ignored, with a Warning
            warnings.append(f"{key} is not supported for matching and was ignored")
            continue
        if LEVELS.index(KEYS[key][1]) > depth:
            raise bad(f"{key} is an attribute of a level below the {resource} searched")
        if key in fixed:
            raise bad(f"{key} is already given in the path")
        matched.append(key)
        conditions.extend(_conditions(key, value, fuzzy == "true"))
    levels = _levels_of(level, fixed)
    fields = {k for lv in levels for k in DEFAULTS[lv] + (EXTRA[lv] if everything else ())}
    fields |= set(included) | set(matched)
    fields = {k for k in fields if _ONLY.get(k, level) == level}
    limit = _count(settings["limit"], "limit") if "limit" in settings else max_results
    if limit > max_results:
        warnings.append(f"limit {limit} is more than this server returns ({max_results})")
        limit = max_results
    offset = _count(settings.get("offset", "0"), "offset")
    return Search(level, conditions, sorted(fields, key=tag_for_keyword), limit, offset, warnings)


def _conditions(key: str, value: str, fuzzy: bool) -> list[Condition]:
    column, _, kind = KEYS[key]
    if kind == "uid":
        uids = [v.strip() for v in re.split(r"[,\\]", value) if v.strip()]
        return [Condition(column, "in", tuple(checked_uid(u, key) for u in uids))] if uids else []
    if kind == "date" and value.strip() not in ("", "*"):
        for bound in value.strip().split("-"):
            if bound and not re.fullmatch(r"[0-9]{8}", bound.strip()):
                raise bad(f"{key} {value!r} is not a date (YYYYMMDD) or a range of dates")
    if kind == "time" and not re.fullmatch(r"[0-9.:\- *]*", value):
        raise bad(f"{key} {value!r} is not a time or a range of times")
    if fuzzy and key in _NAME_KEYS and "*" not in value and "?" not in value:
        words = tuple(w for w in re.split(r"[\^ ,=]+", value.strip()) if w)
        return [Condition(column, "fuzzy", words)] if words else []
    found = condition(key, value)
    return [found] if found else []


def _value(keyword_: str, vr: str, raw) -> dict:
    if raw is None or raw == "":
        return {"vr": vr}
    values = str(raw).split("\\") if keyword_ == "ModalitiesInStudy" else [raw]
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in values]}
    if vr in _NUMBER_VRS:
        try:
            return {"vr": vr, "Value": [int(v) if vr != "DS" else float(v) for v in values]}
        except (TypeError, ValueError):
            return {"vr": vr}            # an index value that is no number: returned empty
    return {"vr": vr, "Value": [str(v) for v in values]}


def answer(search: Search, row: dict, base_url: str) -> dict:
    """One match in the JSON model, with its RetrieveURL (0008,1190)."""
    out = {}
    for key in search.fields:
        tag = tag_for_keyword(key)
        vr = dictionary_VR(tag)
        out[f"{tag:08X}"] = _value(key, vr, row.get(_ROW[key]) if key in _ROW else None)
    url = f"{base_url}/studies/{row['study_uid']}"
    if search.level in ("SERIES", "IMAGE"):
        url += f"/series/{row['series_uid']}"
    if search.level == "IMAGE":
        url += f"/instances/{row['sop_uid']}"
    out["00081190"] = {"vr": "UR", "Value": [url]}
    return dict(sorted(out.items()))
