"""ITI-42 rules, pure: validate a submission, resolve its ids, and decide what the registry must change.

``validate`` and ``plan`` see only the request; ``decide`` also sees the registry state the
store fetched for it (``RegistryState``) and returns the effects to write in one transaction.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from affinity_domain import ebrim as rim
from affinity_domain.ebrim import ObjectList, RegistryObject
from affinity_domain.errors import (DEPRECATED_DOCUMENT, DUPLICATE_UNIQUE_ID, NON_IDENTICAL_HASH, NON_IDENTICAL_SIZE,
                                    PATIENT_ID_DOES_NOT_MATCH, REGISTRY_METADATA_ERROR,
                                    UNKNOWN_PATIENT_ID, XdsError)

from . import formats
from .codes import CodeSets

# Coded attributes: classification scheme -> (attribute name, minimum, maximum)
DOCUMENT_CODES = {
    rim.DE_CLASS_CODE: ("classCode", 1, 1),
    rim.DE_CONFIDENTIALITY: ("confidentialityCode", 1, None),
    rim.DE_EVENT_CODE: ("eventCodeList", 0, None),
    rim.DE_FORMAT_CODE: ("formatCode", 1, 1),
    rim.DE_HCFT_CODE: ("healthcareFacilityTypeCode", 1, 1),
    rim.DE_PRACTICE_SETTING: ("practiceSettingCode", 1, 1),
    rim.DE_TYPE_CODE: ("typeCode", 1, 1),
}
SUBMISSION_SET_CODES = {rim.SS_CONTENT_TYPE: ("contentTypeCode", 0, 1)}
FOLDER_CODES = {rim.FOL_CODE_LIST: ("codeList", 1, None)}
CODES = {"document_entry": DOCUMENT_CODES, "submission_set": SUBMISSION_SET_CODES,
         "folder": FOLDER_CODES}

# Slots: name -> (required for a stable entry, single-valued, format check)
DOCUMENT_SLOTS = {
    "creationTime": (True, True, formats.is_dtm),
    "languageCode": (True, True, None),
    "sourcePatientId": (True, True, None),
    "hash": (True, True, formats.is_sha1_hex),
    "size": (True, True, str.isdigit),
    "repositoryUniqueId": (True, True, formats.is_oid),
    "serviceStartTime": (False, True, formats.is_dtm),
    "serviceStopTime": (False, True, formats.is_dtm),
    "legalAuthenticator": (False, True, formats.is_xcn),
}
# Relationships whose target is an earlier, Approved DocumentEntry (ITI TF-3 4.2.2).
MUST_TARGET_REGISTERED = (rim.RPLC, rim.APND, rim.XFRM, rim.XFRM_RPLC)
ON_DEMAND_OPTIONAL = {"creationTime", "hash", "size"}


def _meta(context: str, location: str = "") -> XdsError:
    return XdsError(REGISTRY_METADATA_ERROR, context, location)


def is_uuid(value: str) -> bool:
    if not value.startswith("urn:uuid:"):
        return False
    try:
        uuid.UUID(value[9:])
        return True
    except ValueError:
        return False


def now_dtm() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())


# ---------------------------------------------------------------- validation (request only)

def _check_codes(obj: RegistryObject, rules: dict, codes: CodeSets, errors: list[XdsError]) -> None:
    for scheme, (name, low, high) in rules.items():
        found = obj.codes(scheme)
        if len(found) < low:
            errors.append(_meta(f"{_label(obj)} is missing {name}", obj.id))
        if high is not None and len(found) > high:
            errors.append(_meta(f"{_label(obj)} has {len(found)} {name} values, at most {high} allowed", obj.id))
        for c in found:
            coding = c.slot("codingScheme")
            if not c.node_representation or len(coding) != 1:
                errors.append(_meta(f"{_label(obj)} {name} needs a code and exactly one codingScheme", obj.id))
            elif codes.enabled and not codes.allows(scheme, c.node_representation, coding[0]):
                errors.append(_meta(f"{_label(obj)} {name} {c.node_representation}^^{coding[0]} "
                                    "is not in the affinity domain's code set", obj.id))


def _label(obj: RegistryObject) -> str:
    return {"document_entry": "DocumentEntry", "submission_set": "SubmissionSet",
            "folder": "Folder", "association": "Association"}.get(obj.kind, "RegistryPackage") + f" {obj.id}"


def _check_ids(obj: RegistryObject, domain: str, errors: list[XdsError]) -> None:
    pid, uid = obj.patient_id, obj.unique_id
    if not pid:
        errors.append(_meta(f"{_label(obj)} has no patientId", obj.id))
    elif (problem := formats.cx_problem(pid)):
        errors.append(_meta(f"{_label(obj)} patientId {pid!r}: {problem}", obj.id))
    if not uid:
        errors.append(_meta(f"{_label(obj)} has no uniqueId", obj.id))
    elif obj.kind != "document_entry" and not formats.is_oid(uid):
        errors.append(_meta(f"{_label(obj)} uniqueId {uid!r} is not an OID", obj.id))
    elif obj.kind == "document_entry" and (problem := formats.unique_id_problem(uid, _dicom_format(obj))):
        errors.append(_meta(f"{_label(obj)} uniqueId {uid!r} {problem}", obj.id))
    if not obj.id:
        errors.append(_meta(f"{_label(obj)} has no id"))


def _dicom_format(entry: RegistryObject) -> bool:
    """Whether the document is a DICOM object (its formatCode a SOP class, as the KOS manifest's is)."""
    return any(c.slot("codingScheme") == [formats.DICOM_UID_REGISTRY] for c in entry.codes(rim.DE_FORMAT_CODE))


def _check_authors(obj: RegistryObject, errors: list[XdsError]) -> None:
    for c in obj.codes(rim.AUTHOR_SCHEME[obj.kind]):
        persons, institutions = c.slot("authorPerson"), c.slot("authorInstitution")
        if len(persons) > 1:
            errors.append(_meta(f"{_label(obj)} author has more than one authorPerson", obj.id))
        if any(not formats.is_xcn(p) for p in persons):
            errors.append(_meta(f"{_label(obj)} authorPerson is not an XCN", obj.id))
        if any(not formats.is_xon(i) for i in institutions):
            errors.append(_meta(f"{_label(obj)} authorInstitution is not an XON", obj.id))


def _check_document(obj: RegistryObject, codes: CodeSets, errors: list[XdsError]) -> None:
    if obj.object_type not in (rim.STABLE, rim.ON_DEMAND):
        errors.append(_meta(f"{_label(obj)} objectType {obj.object_type!r} is neither stable nor on-demand", obj.id))
    if not obj.mime_type:
        errors.append(_meta(f"{_label(obj)} has no mimeType", obj.id))
    elif codes.mime_types and obj.mime_type not in codes.mime_types:
        errors.append(_meta(f"{_label(obj)} mimeType {obj.mime_type} is not in the affinity domain's list", obj.id))
    on_demand = obj.object_type == rim.ON_DEMAND
    for name, (required, single, check) in DOCUMENT_SLOTS.items():
        values = obj.slot(name)
        if not values:
            if required and not (on_demand and name in ON_DEMAND_OPTIONAL):
                errors.append(_meta(f"{_label(obj)} is missing the {name} slot", obj.id))
            continue
        if single and len(values) > 1:
            errors.append(_meta(f"{_label(obj)} slot {name} must have one value", obj.id))
        if check and not all(check(v) for v in values):
            errors.append(_meta(f"{_label(obj)} slot {name} has a malformed value {values[0]!r}", obj.id))
    spid = obj.slot_value("sourcePatientId")
    if spid and formats.cx_problem(spid) and "^^^" not in spid:
        errors.append(_meta(f"{_label(obj)} sourcePatientId {spid!r} is not a CX", obj.id))
    start, stop = obj.slot_value("serviceStartTime"), obj.slot_value("serviceStopTime")
    if start and stop and formats.is_dtm(start) and formats.is_dtm(stop) and \
            formats.dtm_key(stop) < formats.dtm_key(start):
        errors.append(_meta(f"{_label(obj)} serviceStopTime is before serviceStartTime", obj.id))
    _check_authors(obj, errors)


def _check_submission_set(obj: RegistryObject, errors: list[XdsError]) -> None:
    time_ = obj.slot("submissionTime")
    if len(time_) != 1 or not formats.is_dtm(time_[0]):
        errors.append(_meta(f"{_label(obj)} needs one submissionTime in DTM format", obj.id))
    source = obj.external_id(rim.SS_SOURCE_ID)
    if not source:
        errors.append(_meta(f"{_label(obj)} has no sourceId", obj.id))
    elif not formats.is_oid(source):
        errors.append(_meta(f"{_label(obj)} sourceId {source!r} is not an OID", obj.id))
    if not obj.codes(rim.SS_CONTENT_TYPE):
        errors.append(_meta(f"{_label(obj)} is missing contentTypeCode", obj.id))
    _check_authors(obj, errors)


def validate(objects: ObjectList, codes: CodeSets, domain: str) -> list[XdsError]:
    """Every rule that needs only the request. Returns all the errors found."""
    errors: list[XdsError] = []
    if objects.unknown:
        errors.append(_meta(f"unsupported objects in submission: {', '.join(sorted(set(objects.unknown)))}"))
    packages = objects.of_kind("registry_package")
    for p in packages:
        errors.append(_meta(f"RegistryPackage {p.id} is classified neither as SubmissionSet nor Folder", p.id))
    sets = objects.of_kind("submission_set")
    if len(sets) != 1:
        errors.append(_meta(f"a submission must hold exactly one SubmissionSet, found {len(sets)}"))
        return errors
    ids = [o.id for o in objects.objects]
    if len(ids) != len(set(ids)):
        errors.append(_meta("object ids repeat within the submission"))
    for obj in objects.objects:
        if obj.kind in CODES:
            _check_ids(obj, domain, errors)
            _check_codes(obj, CODES[obj.kind], codes, errors)
        if obj.kind == "document_entry":
            _check_document(obj, codes, errors)
        elif obj.kind == "submission_set":
            _check_submission_set(obj, errors)
        elif obj.kind == "folder" and not obj.name:
            errors.append(_meta(f"{_label(obj)} has no title (Name)", obj.id))
        elif obj.kind == "association":
            _check_association(obj, errors)
    if errors:
        return errors
    ss = sets[0]
    mismatched = [o for o in objects.objects if o.kind in ("document_entry", "folder")
                  and o.patient_id != ss.patient_id]
    for o in mismatched:
        errors.append(XdsError(PATIENT_ID_DOES_NOT_MATCH,
                               f"{_label(o)} patientId {o.patient_id} differs from the SubmissionSet's "
                               f"{ss.patient_id}", o.id))
    if formats.cx_authority(ss.patient_id or "") != domain:
        errors.append(XdsError(UNKNOWN_PATIENT_ID, f"patientId {ss.patient_id} is not in the affinity "
                                                   f"domain {domain}", ss.id))
    members = {a.target for a in objects.of_kind("association")
               if a.association_type == rim.HAS_MEMBER and a.source == ss.id}
    for o in objects.objects:
        if o.kind in ("document_entry", "folder") and o.id not in members:
            errors.append(_meta(f"{_label(o)} is not a member (HasMember) of the SubmissionSet", o.id))
    local = {o.id: o for o in objects.objects}
    for a in objects.of_kind("association"):
        src = local.get(a.source)
        if a.association_type in MUST_TARGET_REGISTERED:
            if src is None or src.kind != "document_entry":
                errors.append(_meta(f"{_label(a)}: the source of {a.association_type.rsplit(':', 1)[-1]} "
                                    "must be a DocumentEntry in this submission", a.id))
            if a.target in local:
                errors.append(_meta(f"{_label(a)}: the target must be a DocumentEntry already registered", a.id))
            elif not is_uuid(a.target):
                errors.append(_meta(f"{_label(a)}: target {a.target!r} is not a registered object's UUID", a.id))
        elif a.association_type == rim.HAS_MEMBER:
            if src is not None and src.kind == "submission_set":
                if a.target in local and local[a.target].kind in ("document_entry", "folder") and \
                        a.target != a.source and not a.slot("SubmissionSetStatus"):
                    a.set_slot("SubmissionSetStatus", ["Original"])
                if a.slot("SubmissionSetStatus") and a.slot("SubmissionSetStatus")[0] not in ("Original", "Reference"):
                    errors.append(_meta(f"{_label(a)}: SubmissionSetStatus must be Original or Reference", a.id))
            elif src is not None and src.kind != "folder":
                errors.append(_meta(f"{_label(a)}: HasMember must start at a SubmissionSet or Folder", a.id))
            for end in (a.source, a.target):
                if end not in local and not is_uuid(end):
                    errors.append(_meta(f"{_label(a)}: {end!r} is neither in the submission nor a UUID", a.id))
    return errors


def _check_association(a: RegistryObject, errors: list[XdsError]) -> None:
    if a.association_type not in rim.ASSOCIATION_TYPES:
        errors.append(_meta(f"{_label(a)}: unknown associationType {a.association_type!r}", a.id))
    if not a.source or not a.target:
        errors.append(_meta(f"{_label(a)} needs sourceObject and targetObject", a.id))


# ---------------------------------------------------------------- planning (request only)

def plan(objects: ObjectList, submitted_at: str | None = None) -> ObjectList:
    """Give symbolic ids UUIDs, set lid, VersionInfo, status and folder lastUpdateTime."""
    mapping: dict[str, str] = {}

    def resolve(value: str) -> str:
        if not value or is_uuid(value):
            return value
        if value not in mapping:
            mapping[value] = f"urn:uuid:{uuid.uuid4()}"
        return mapping[value]

    submitted_at = submitted_at or now_dtm()
    for obj in objects.objects:
        obj.id = resolve(obj.id)
    for obj in objects.objects:
        obj.lid = obj.id if not obj.lid or obj.lid == obj.id or obj.lid in mapping else resolve(obj.lid)
        obj.lid = mapping.get(obj.lid, obj.lid)
        obj.status = rim.APPROVED
        if obj.kind != "association":
            obj.version_name = "1"
        if obj.kind == "association":
            obj.source, obj.target = resolve(obj.source), resolve(obj.target)
        for c in obj.classifications:
            c.id = resolve(c.id) if c.id else f"urn:uuid:{uuid.uuid4()}"
            c.classified_object = obj.id
        for e in obj.external_identifiers:
            e.id = resolve(e.id) if e.id else f"urn:uuid:{uuid.uuid4()}"
            e.registry_object = obj.id
        if obj.kind == "folder":
            obj.set_slot("lastUpdateTime", [submitted_at])
    return objects


# ---------------------------------------------------------------- decisions (request + registry state)

@dataclass
class Existing:
    """A registered object the submission refers to."""

    id: str
    kind: str
    status: str
    patient_id: str
    lid: str = ""


@dataclass
class RegistryState:
    patients: dict[str, str | None] = field(default_factory=dict)           # known id -> merged_into
    documents_by_unique_id: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # -> (hash, size)
    taken_unique_ids: set[str] = field(default_factory=set)                  # SubmissionSet/Folder uniqueIds
    objects: dict[str, Existing] = field(default_factory=dict)               # referenced registered objects
    dependents: dict[str, list[str]] = field(default_factory=dict)           # doc -> its APND/XFRM documents
    folders_of: dict[str, list[str]] = field(default_factory=dict)           # doc -> folders holding it


@dataclass
class Effects:
    deprecate: list[str] = field(default_factory=list)                       # document ids
    new_associations: list[RegistryObject] = field(default_factory=list)     # registry-made HasMembers
    touched_folders: list[str] = field(default_factory=list)                 # lastUpdateTime := now


def check_patient(ss: RegistryObject, state: RegistryState) -> list[XdsError]:
    """The SubmissionSet's patient must be known to the registry and not merged into another."""
    pid = ss.patient_id or ""
    if pid not in state.patients:
        return [XdsError(UNKNOWN_PATIENT_ID, f"patientId {pid} is not known to the registry", ss.id)]
    if state.patients[pid]:
        return [XdsError(UNKNOWN_PATIENT_ID, f"patientId {pid} was merged into {state.patients[pid]}", ss.id)]
    return []


def decide(objects: ObjectList, state: RegistryState, submitted_at: str) -> tuple[list[XdsError], Effects]:
    effects = Effects()
    ss = objects.of_kind("submission_set")[0]
    pid = ss.patient_id or ""
    errors = check_patient(ss, state)
    for o in objects.objects:
        uid = o.unique_id
        if o.kind == "document_entry":
            for known_hash, known_size in state.documents_by_unique_id.get(uid, []):
                mine_hash, mine_size = (o.slot_value("hash") or "").lower(), o.slot_value("size")
                if known_hash and mine_hash != known_hash.lower():
                    errors.append(XdsError(NON_IDENTICAL_HASH, f"DocumentEntry uniqueId {uid} is registered "
                                                               "with another hash", o.id))
                    break
                elif known_size is not None and mine_size and int(mine_size) != known_size:
                    errors.append(XdsError(NON_IDENTICAL_SIZE, f"DocumentEntry uniqueId {uid} is registered "
                                                               "with another size", o.id))
                    break
        elif o.kind in ("submission_set", "folder") and uid in state.taken_unique_ids:
            errors.append(XdsError(DUPLICATE_UNIQUE_ID, f"{_label(o)} uniqueId {uid} is already registered", o.id))
    local = {o.id: o for o in objects.objects}
    for a in objects.of_kind("association"):
        for end in (a.source, a.target):
            if end in local:
                continue
            target = state.objects.get(end)
            if target is None:
                errors.append(_meta(f"{_label(a)} refers to {end}, which is not in the registry", a.id))
            elif target.kind in ("document_entry", "folder") and target.patient_id != pid:
                errors.append(XdsError(PATIENT_ID_DOES_NOT_MATCH, f"{_label(a)} links {end} of patient "
                                                                  f"{target.patient_id} to patient {pid}", a.id))
            elif a.association_type in MUST_TARGET_REGISTERED and target.kind != "document_entry":
                errors.append(_meta(f"{_label(a)}: target {end} is not a DocumentEntry", a.id))
            elif a.association_type in MUST_TARGET_REGISTERED and target.status != rim.APPROVED:
                errors.append(XdsError(DEPRECATED_DOCUMENT, f"{_label(a)}: target DocumentEntry {end} is "
                                                            "deprecated", a.id))
        if a.association_type in (rim.RPLC, rim.XFRM_RPLC) and a.target in state.objects:
            effects.deprecate.append(a.target)
            effects.deprecate.extend(state.dependents.get(a.target, []))
            for folder in state.folders_of.get(a.target, []):
                effects.new_associations.append(_folder_member(folder, a.source))
                effects.touched_folders.append(folder)
        if a.association_type == rim.HAS_MEMBER and a.source in state.objects and \
                state.objects[a.source].kind == "folder":
            effects.touched_folders.append(a.source)
    return errors, effects


def _folder_member(folder: str, document: str) -> RegistryObject:
    return RegistryObject(kind="association", id=f"urn:uuid:{uuid.uuid4()}", status=rim.APPROVED,
                          object_type=rim.ASSOCIATION_TYPE_OBJ, association_type=rim.HAS_MEMBER,
                          source=folder, target=document)


def referenced_ids(objects: ObjectList) -> set[str]:
    """Registered objects the submission points at (the store fetches these for ``decide``)."""
    local = {o.id for o in objects.objects}
    refs = set()
    for a in objects.of_kind("association"):
        refs.update(x for x in (a.source, a.target) if x not in local and is_uuid(x))
    return refs
