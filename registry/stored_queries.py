"""ITI-18 / ITI-51 stored queries, pure: read the request's parameters, check them, and plan SQL.

Each query is a function over a ``Fetch`` (the store's four table readers) so that its logic
is testable without a database; every document filter becomes one indexed SQL statement.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Protocol

from lxml import etree

from affinity_domain import ns
from affinity_domain import ebrim as rim
from affinity_domain.errors import (REGISTRY_ERROR, RESULT_NOT_SINGLE_PATIENT, STORED_QUERY_MISSING_PARAM,
                                    STORED_QUERY_PARAM_NUMBER, UNKNOWN_STORED_QUERY, XdsError)
from affinity_domain.query_ids import (FIND_DOCUMENTS, FIND_DOCUMENTS_BY_REFERENCE_ID, FIND_DOCUMENTS_MPQ, FIND_FOLDERS,
                                       FIND_FOLDERS_MPQ, FIND_SUBMISSION_SETS, GET_ALL, GET_ASSOCIATIONS,
                                       GET_DOCUMENTS, GET_DOCUMENTS_AND_ASSOCIATIONS, GET_FOLDER_AND_CONTENTS,
                                       GET_FOLDERS, GET_FOLDERS_FOR_DOCUMENT, GET_RELATED_DOCUMENTS,
                                       GET_SUBMISSION_SET_AND_CONTENTS, GET_SUBMISSION_SETS)

from .formats import dtm_key

MULTI_PATIENT = (FIND_DOCUMENTS_MPQ, FIND_FOLDERS_MPQ)


# ---------------------------------------------------------------- reading parameters

class Params:
    """Slot values of an AdhocQuery: name -> list of slots, each a list of parsed values."""

    def __init__(self, slots: dict[str, list[list[str]]]):
        self.slots = slots

    def has(self, name: str) -> bool:
        return name in self.slots

    def values(self, name: str) -> list[str]:
        """All values of a parameter (OR semantics across Value elements and slots)."""
        return [v for slot in self.slots.get(name, []) for v in slot]

    def groups(self, name: str) -> list[list[str]]:
        """One OR-group per slot; the groups are ANDed (ITI TF-2a 3.18.4.1.2.3.5)."""
        return self.slots.get(name, [])

    def single(self, name: str) -> str | None:
        values = self.values(name)
        if len(values) > 1:
            raise XdsError(STORED_QUERY_PARAM_NUMBER, f"{name} takes a single value", name)
        return values[0] if values else None


_TOKEN = re.compile(r"\s*('(?:[^']|'')*'|[^,()\s]+)\s*")


def parse_value(text: str) -> list[str]:
    """``'a'`` -> [a]; ``('a','b')`` -> [a, b]; ``200412`` -> [200412]."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    values = []
    for token in (t for t in _split_list(text) if t.strip()):
        token = token.strip()
        if len(token) >= 2 and token[0] == token[-1] == "'":
            token = token[1:-1].replace("''", "'")
        values.append(token)
    return values


def _split_list(text: str) -> list[str]:
    items, current, quoted = [], [], False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return items


@dataclass
class QueryRequest:
    query_id: str
    params: Params
    return_type: str = "LeafClass"       # or ObjectRef
    home: str = ""


def read_request(request: etree._Element) -> QueryRequest:
    option = request.find(rim.q(ns.QUERY, "ResponseOption"))
    query = request.find(rim.q(ns.RIM, "AdhocQuery"))
    if query is None:
        raise XdsError(UNKNOWN_STORED_QUERY, "AdhocQueryRequest has no AdhocQuery")
    slots: dict[str, list[list[str]]] = {}
    for slot in query.iterfind(rim.q(ns.RIM, "Slot")):
        values = [v for el in slot.iterfind(f"{{{ns.RIM}}}ValueList/{{{ns.RIM}}}Value")
                  for v in parse_value(el.text or "")]
        slots.setdefault(slot.get("name", ""), []).append(values)
    return_type = option.get("returnType", "ObjectRef") if option is not None else "ObjectRef"
    return QueryRequest(query.get("id", ""), Params(slots), return_type, query.get("home", ""))


# ---------------------------------------------------------------- SQL conditions

@dataclass
class Where:
    """A conjunction of SQL conditions with their parameters."""

    terms: list[str] = field(default_factory=list)
    args: list = field(default_factory=list)

    def add(self, term: str, *args) -> "Where":
        self.terms.append(term)
        self.args.extend(args)
        return self

    @property
    def sql(self) -> str:
        return " AND ".join(self.terms) if self.terms else "true"


def status_names(values: list[str]) -> list[str]:
    return values


def _codes(where: Where, params: Params, name: str, column: str, coded: bool = True) -> None:
    for group in params.groups(name):
        if coded:
            for value in group:
                code, sep, scheme = value.partition("^^")
                if not (code and sep and scheme):
                    raise XdsError(REGISTRY_ERROR, f"{name} value {value!r} is not code^^codingScheme", name)
        if group:
            where.add(f"{column} && %s", group)


def _time_range(where: Where, params: Params, name: str, column: str) -> None:
    low, high = params.single(f"{name}From"), params.single(f"{name}To")
    if low:
        where.add(f"{column} >= %s", dtm_key(low))
    if high:
        where.add(f"{column} < %s", dtm_key(high))


def _entry_types(params: Params, name: str) -> list[bool]:
    values = params.values(name)
    if not values:
        return [False]                    # stable entries only, unless asked
    return sorted({v == rim.ON_DEMAND for v in values if v in (rim.STABLE, rim.ON_DEMAND)})


def _authors(where: Where, params: Params, name: str) -> None:
    values = params.values(name)
    if values:
        # authorPerson uses SQL LIKE wildcards (% and _), as the profile defines.
        where.add("EXISTS (SELECT 1 FROM unnest(author_person) a WHERE a LIKE ANY(%s))", values)


def _require(params: Params, *names: str) -> None:
    for name in names:
        if not params.values(name):
            raise XdsError(STORED_QUERY_MISSING_PARAM, f"required parameter {name} is missing", name)


def _one_of(params: Params, uuid_name: str, uid_name: str) -> tuple[str, list[str]]:
    has_uuid, has_uid = bool(params.values(uuid_name)), bool(params.values(uid_name))
    if has_uuid and has_uid:
        raise XdsError(STORED_QUERY_PARAM_NUMBER, f"give {uuid_name} or {uid_name}, not both", uuid_name)
    if not (has_uuid or has_uid):
        raise XdsError(STORED_QUERY_MISSING_PARAM, f"{uuid_name} or {uid_name} is required", uuid_name)
    return ("id", params.values(uuid_name)) if has_uuid else ("unique_id", params.values(uid_name))


def document_filter(params: Params, patient: str = "$XDSDocumentEntryPatientId",
                    multi_patient: bool = False) -> Where:
    """FindDocuments (and its multi-patient and reference-id forms) as one indexed condition."""
    where = Where()
    if multi_patient:
        if params.values(patient):
            where.add("patient_id = ANY(%s)", params.values(patient))
    else:
        where.add("patient_id = %s", params.single(patient))
    where.add("status = ANY(%s)", params.values("$XDSDocumentEntryStatus"))
    _codes(where, params, "$XDSDocumentEntryClassCode", "class_code")
    _codes(where, params, "$XDSDocumentEntryTypeCode", "type_code")
    _codes(where, params, "$XDSDocumentEntryPracticeSettingCode", "practice_setting")
    _codes(where, params, "$XDSDocumentEntryHealthcareFacilityTypeCode", "facility_type")
    _codes(where, params, "$XDSDocumentEntryEventCodeList", "event_code")
    _codes(where, params, "$XDSDocumentEntryConfidentialityCode", "confidentiality")
    _codes(where, params, "$XDSDocumentEntryFormatCode", "format_code")
    _time_range(where, params, "$XDSDocumentEntryCreationTime", "creation_time")
    _time_range(where, params, "$XDSDocumentEntryServiceStartTime", "service_start_time")
    _time_range(where, params, "$XDSDocumentEntryServiceStopTime", "service_stop_time")
    _authors(where, params, "$XDSDocumentEntryAuthorPerson")
    where.add("on_demand = ANY(%s)", _entry_types(params, "$XDSDocumentEntryType"))
    return where


def _content_filter(where: Where, params: Params, format_name: str, conf_name: str,
                    type_name: str) -> Where:
    """The document filters that GetAll, GetSubmissionSetAndContents and GetFolderAndContents allow."""
    _codes(where, params, format_name, "format_code")
    _codes(where, params, conf_name, "confidentiality")
    where.add("on_demand = ANY(%s)", _entry_types(params, type_name))
    return where


# ---------------------------------------------------------------- the queries

class Fetch(Protocol):
    """Readers over the registry tables; each returns rows with ``.id`` and ``.patient_id``."""

    def documents(self, where: Where) -> list: ...
    def submission_sets(self, where: Where) -> list: ...
    def folders(self, where: Where) -> list: ...
    def associations(self, where: Where) -> list: ...


@dataclass
class Result:
    documents: list = field(default_factory=list)
    submission_sets: list = field(default_factory=list)
    folders: list = field(default_factory=list)
    associations: list = field(default_factory=list)

    def all(self) -> list:
        return self.submission_sets + self.folders + self.documents + self.associations


def _ids(rows) -> list[str]:
    return [r.id for r in rows]


def find_documents(p: Params, db: Fetch) -> Result:
    _require(p, "$XDSDocumentEntryPatientId", "$XDSDocumentEntryStatus")
    return Result(documents=db.documents(document_filter(p)))


def find_documents_by_reference_id(p: Params, db: Fetch) -> Result:
    _require(p, "$XDSDocumentEntryPatientId", "$XDSDocumentEntryStatus",
             "$XDSDocumentEntryReferenceIdList")
    where = document_filter(p)
    _codes(where, p, "$XDSDocumentEntryReferenceIdList", "reference_id", coded=False)
    return Result(documents=db.documents(where))


def find_documents_mpq(p: Params, db: Fetch) -> Result:
    _require(p, "$XDSDocumentEntryStatus")
    if not any(p.values(n) for n in ("$XDSDocumentEntryPatientId", "$XDSDocumentEntryClassCode",
                                       "$XDSDocumentEntryEventCodeList",
                                       "$XDSDocumentEntryHealthcareFacilityTypeCode")):
        raise XdsError(STORED_QUERY_MISSING_PARAM, "give a patient id, class code, event code or "
                                                   "healthcare facility type code", "$XDSDocumentEntryClassCode")
    return Result(documents=db.documents(document_filter(p, multi_patient=True)))


def find_submission_sets(p: Params, db: Fetch) -> Result:
    _require(p, "$XDSSubmissionSetPatientId", "$XDSSubmissionSetStatus")
    where = Where().add("patient_id = %s", p.single("$XDSSubmissionSetPatientId"))
    where.add("status = ANY(%s)", p.values("$XDSSubmissionSetStatus"))
    if p.values("$XDSSubmissionSetSourceId"):
        where.add("source_id = ANY(%s)", p.values("$XDSSubmissionSetSourceId"))
    _time_range(where, p, "$XDSSubmissionSetSubmissionTime", "submission_time")
    author = p.single("$XDSSubmissionSetAuthorPerson")
    if author:
        where.add("EXISTS (SELECT 1 FROM unnest(author_person) a WHERE a LIKE %s)", author)
    _codes(where, p, "$XDSSubmissionSetContentType", "content_type")
    return Result(submission_sets=db.submission_sets(where))


def _folder_filter(p: Params, multi_patient: bool = False) -> Where:
    where = Where()
    if multi_patient:
        if p.values("$XDSFolderPatientId"):
            where.add("patient_id = ANY(%s)", p.values("$XDSFolderPatientId"))
    else:
        where.add("patient_id = %s", p.single("$XDSFolderPatientId"))
    where.add("status = ANY(%s)", p.values("$XDSFolderStatus"))
    _time_range(where, p, "$XDSFolderLastUpdateTime", "last_update_time")
    _codes(where, p, "$XDSFolderCodeList", "code_list")
    return where


def find_folders(p: Params, db: Fetch) -> Result:
    _require(p, "$XDSFolderPatientId", "$XDSFolderStatus")
    return Result(folders=db.folders(_folder_filter(p)))


def find_folders_mpq(p: Params, db: Fetch) -> Result:
    _require(p, "$XDSFolderStatus")
    return Result(folders=db.folders(_folder_filter(p, multi_patient=True)))


def get_all(p: Params, db: Fetch) -> Result:
    _require(p, "$patientId", "$XDSDocumentEntryStatus", "$XDSSubmissionSetStatus", "$XDSFolderStatus")
    pid = p.single("$patientId")
    docs = Where().add("patient_id = %s", pid).add("status = ANY(%s)", p.values("$XDSDocumentEntryStatus"))
    _content_filter(docs, p, "$XDSDocumentEntryFormatCode", "$XDSDocumentEntryConfidentialityCode",
                    "$XDSDocumentEntryType")
    r = Result(documents=db.documents(docs),
               submission_sets=db.submission_sets(Where().add("patient_id = %s", pid).add(
                   "status = ANY(%s)", p.values("$XDSSubmissionSetStatus"))),
               folders=db.folders(Where().add("patient_id = %s", pid).add(
                   "status = ANY(%s)", p.values("$XDSFolderStatus"))))
    ids = _ids(r.documents) + _ids(r.submission_sets) + _ids(r.folders)
    assocs = db.associations(Where().add("source = ANY(%s)", ids)) if ids else []
    member = set(ids) | {a.id for a in assocs}
    r.associations = [a for a in assocs if a.target in member]
    return r


def get_documents(p: Params, db: Fetch) -> Result:
    column, values = _one_of(p, "$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId")
    return Result(documents=db.documents(Where().add(f"{column} = ANY(%s)", values)))


def get_folders(p: Params, db: Fetch) -> Result:
    column, values = _one_of(p, "$XDSFolderEntryUUID", "$XDSFolderUniqueId")
    return Result(folders=db.folders(Where().add(f"{column} = ANY(%s)", values)))


def get_associations(p: Params, db: Fetch) -> Result:
    _require(p, "$uuid")
    ids = p.values("$uuid")
    return Result(associations=db.associations(
        Where().add("(source = ANY(%s) OR target = ANY(%s))", ids, ids)))


def get_documents_and_associations(p: Params, db: Fetch) -> Result:
    r = get_documents(p, db)
    ids = _ids(r.documents)
    if ids:
        r.associations = db.associations(
            Where().add("(source = ANY(%s) OR target = ANY(%s))", ids, ids))
    return r


def get_submission_sets(p: Params, db: Fetch) -> Result:
    _require(p, "$uuid")
    members = db.associations(Where().add("target = ANY(%s)", p.values("$uuid"))
                              .add("type = %s", rim.HAS_MEMBER))
    sets = db.submission_sets(Where().add("id = ANY(%s)", [a.source for a in members])) if members else []
    set_ids = set(_ids(sets))
    return Result(submission_sets=sets, associations=[a for a in members if a.source in set_ids])


def _contents(container_ids: list[str], p: Params, db: Fetch, names: tuple[str, str, str]) -> tuple[list, list]:
    """HasMember associations from the containers, and the documents they reach (filtered)."""
    assocs = db.associations(Where().add("source = ANY(%s)", container_ids)
                             .add("type = %s", rim.HAS_MEMBER))
    targets = [a.target for a in assocs]
    docs = db.documents(_content_filter(Where().add("id = ANY(%s)", targets), p, *names)) \
        if targets else []
    return assocs, docs


def get_submission_set_and_contents(p: Params, db: Fetch) -> Result:
    column, values = _one_of(p, "$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId")
    sets = db.submission_sets(Where().add(f"{column} = ANY(%s)", values))
    if not sets:
        return Result()
    members, docs = _contents(_ids(sets), p, db, ("$XDSDocumentEntryFormatCode",
                                                  "$XDSDocumentEntryConfidentialityCode",
                                                  "$XDSDocumentEntryType"))
    targets = [a.target for a in members]
    folders = db.folders(Where().add("id = ANY(%s)", targets))
    shown_docs = set(_ids(docs))
    # Folder-to-document links the submission made are members too; show those whose document shows.
    links = [a for a in db.associations(Where().add("id = ANY(%s)", targets))
             if a.target in shown_docs]
    shown = shown_docs | set(_ids(folders)) | set(_ids(links))
    return Result(submission_sets=sets, documents=docs, folders=folders,
                  associations=[a for a in members if a.target in shown] + links)


def get_folder_and_contents(p: Params, db: Fetch) -> Result:
    column, values = _one_of(p, "$XDSFolderEntryUUID", "$XDSFolderUniqueId")
    folders = db.folders(Where().add(f"{column} = ANY(%s)", values))
    if not folders:
        return Result()
    assocs, docs = _contents(_ids(folders), p, db, ("$XDSDocumentEntryFormatCode",
                                                    "$XDSDocumentEntryConfidentialityCode",
                                                    "$XDSDocumentEntryType"))
    kept = set(_ids(docs))
    return Result(folders=folders, documents=docs, associations=[a for a in assocs if a.target in kept])


def _document_ids(p: Params, db: Fetch) -> list:
    column, values = _one_of(p, "$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId")
    return db.documents(Where().add(f"{column} = ANY(%s)", values))


def get_folders_for_document(p: Params, db: Fetch) -> Result:
    docs = _document_ids(p, db)
    if not docs:
        return Result()
    links = db.associations(Where().add("target = ANY(%s)", _ids(docs)).add("type = %s", rim.HAS_MEMBER))
    folders = db.folders(Where().add("id = ANY(%s)", [a.source for a in links])) if links else []
    return Result(folders=folders)


def get_related_documents(p: Params, db: Fetch) -> Result:
    _require(p, "$AssociationTypes")
    docs = _document_ids(p, db)
    if not docs:
        return Result()
    ids = _ids(docs)
    assocs = db.associations(Where().add("(source = ANY(%s) OR target = ANY(%s))", ids, ids)
                             .add("type = ANY(%s)", p.values("$AssociationTypes")))
    if not assocs:
        return Result()
    others = {a.target if a.source in ids else a.source for a in assocs} - set(ids)
    where = Where().add("id = ANY(%s)", sorted(others))
    where.add("on_demand = ANY(%s)", _entry_types(p, "$XDSDocumentEntryType"))
    related = db.documents(where)
    found = set(_ids(related))
    assocs = [a for a in assocs if (a.target in found or a.source in found)]
    if not assocs:
        return Result()
    return Result(documents=docs + related, associations=assocs)


QUERIES: dict[str, Callable[[Params, Fetch], Result]] = {
    FIND_DOCUMENTS: find_documents,
    FIND_SUBMISSION_SETS: find_submission_sets,
    FIND_FOLDERS: find_folders,
    GET_ALL: get_all,
    GET_DOCUMENTS: get_documents,
    GET_FOLDERS: get_folders,
    GET_ASSOCIATIONS: get_associations,
    GET_DOCUMENTS_AND_ASSOCIATIONS: get_documents_and_associations,
    GET_SUBMISSION_SETS: get_submission_sets,
    GET_SUBMISSION_SET_AND_CONTENTS: get_submission_set_and_contents,
    GET_FOLDER_AND_CONTENTS: get_folder_and_contents,
    GET_FOLDERS_FOR_DOCUMENT: get_folders_for_document,
    GET_RELATED_DOCUMENTS: get_related_documents,
    FIND_DOCUMENTS_BY_REFERENCE_ID: find_documents_by_reference_id,
    FIND_DOCUMENTS_MPQ: find_documents_mpq,
    FIND_FOLDERS_MPQ: find_folders_mpq,
}
# Queries whose results may rightly span patients: the patient-scoped finds and ITI-51.
PATIENT_SCOPED = {FIND_DOCUMENTS, FIND_SUBMISSION_SETS, FIND_FOLDERS, GET_ALL,
                  FIND_DOCUMENTS_BY_REFERENCE_ID} | set(MULTI_PATIENT)


def patients_of(result: Result) -> set[str]:
    return {r.patient_id for r in result.documents + result.submission_sets + result.folders if r.patient_id}


def without_patients(result: Result, patients: set[str]) -> Result:
    """``result`` with the objects of ``patients`` left out, and the associations that name them."""
    def keep(rows):
        return [r for r in rows if r.patient_id not in patients]
    kept = Result(documents=keep(result.documents), submission_sets=keep(result.submission_sets),
                  folders=keep(result.folders))
    hidden = {r.id for r in result.all() if r.patient_id in patients}
    kept.associations = [a for a in result.associations
                         if a.source not in hidden and a.target not in hidden and a.id not in hidden]
    return kept


def run(request: QueryRequest, db: Fetch, multi_patient_allowed: bool = False) -> Result:
    query = QUERIES.get(request.query_id)
    if query is None or (request.query_id in MULTI_PATIENT and not multi_patient_allowed) or \
            (request.query_id not in MULTI_PATIENT and multi_patient_allowed):
        raise XdsError(UNKNOWN_STORED_QUERY, f"unknown stored query {request.query_id}", request.query_id)
    result = query(request.params, db)
    if request.return_type == "LeafClass" and request.query_id not in PATIENT_SCOPED:
        patients = {r.patient_id for r in result.documents + result.submission_sets + result.folders}
        if len(patients) > 1:
            raise XdsError(RESULT_NOT_SINGLE_PATIENT, "the objects found belong to more than one patient")
    return result
