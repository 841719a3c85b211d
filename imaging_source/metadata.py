"""RAD-68 metadata, pure: the XDS-I.b DocumentEntry for a manifest, its SubmissionSet, the RPLC
association when it replaces an earlier manifest, and the ProvideAndRegisterDocumentSetRequest."""
from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from affinity_domain import ns
from affinity_domain import ebrim as rim
from affinity_domain.ebrim import Classification, ExternalIdentifier, RegistryObject, Slot
from affinity_domain.ns import XDSB, XOP
MIME_DICOM = "application/dicom"
DOCUMENT_ID = "Manifest01"
MODALITY_SCHEME = "1.2.840.10008.2.16.4"      # DICOM (DCM) codes, as the domain's eventCodeList holds them
SNOMED = "2.16.840.1.113883.6.96"
# Body Part Examined (PS3.16 Annex L) -> the SNOMED anatomic region codes of the domain's code set.
BODY_PARTS = {
    "ABDOMEN": ("T-D4000", "Abdomen"), "BRAIN": ("T-A0100", "Brain"), "BREAST": ("T-04000", "Breast"),
    "CHEST": ("T-D3000", "Chest"), "CHESTABDOMEN": ("R-FAB55", "Chest and Abdomen"), "COLON": ("T-59300", "Colon"),
    "WHOLEBODY": ("T-D0010", "Entire body"), "EYE": ("T-AA000", "Eye"), "FOOT": ("T-D9700", "Foot"),
    "HAND": ("T-D8700", "Hand"), "HEAD": ("T-D1100", "Head"), "HEADNECK": ("T-D1000", "Head and Neck"),
    "HEART": ("T-32000", "Heart"), "KIDNEY": ("T-71000", "Kidney"), "LIVER": ("T-62000", "Liver"),
    "LEG": ("T-D9000", "Lower limb"), "NECK": ("T-D1600", "Neck"), "PELVIS": ("T-D6000", "Pelvis"),
    "SKULL": ("T-11100", "Skull"), "SPINE": ("T-D04FF", "Spine"),
}

Code = tuple  # (code, coding scheme, display name)


@dataclass
class ManifestFacts:
    """What the submission says about one published manifest."""

    kos_uid: str
    entry_uuid: str                # urn:uuid:… of the DocumentEntry
    submission_set_uid: str
    submission_set_uuid: str
    patient_id: str                # affinity-domain CX
    source_patient_id: str         # local CX
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_uid: str = ""
    accession: str = ""
    accession_issuer: str = ""
    study_date: str = ""
    study_time: str = ""
    title: str = "Imaging study manifest"
    creation_time: str = ""        # UTC DTM
    modalities: list[str] = field(default_factory=list)
    body_parts: list[str] = field(default_factory=list)
    replaces: str = ""             # entryUUID of the manifest this one replaces (RPLC)


def service_start(date: str, time: str) -> str:
    """DICOM DA + TM -> DTM (seconds precision at most)."""
    if len(date) != 8 or not date.isdigit():
        return ""
    digits = "".join(ch for ch in time.split(".")[0] if ch.isdigit())[:6]
    digits = digits[: len(digits) - len(digits) % 2]
    return date + digits


def event_codes(modalities: list[str], body_parts: list[str]) -> list[Code]:
    codes, seen = [], set()
    for m in modalities:
        m = m.strip().upper()
        if m and m not in ("KO", "PR", "SR") and (m, MODALITY_SCHEME) not in seen:
            seen.add((m, MODALITY_SCHEME))
            codes.append((m, MODALITY_SCHEME, m))
    for b in body_parts:
        region = BODY_PARTS.get(b.strip().upper().replace(" ", ""))
        if region and (region[0], SNOMED) not in seen:
            seen.add((region[0], SNOMED))
            codes.append((region[0], SNOMED, region[1]))
    return codes


def _code(obj_id: str, scheme: str, code: Code, n: int) -> Classification:
    return Classification(id=f"{obj_id}_c{n}", scheme=scheme, classified_object=obj_id,
                          node_representation=code[0], name=code[2] if len(code) > 2 else code[0],
                          slots=[Slot("codingScheme", [code[1]])])


def _ext(obj_id: str, scheme: str, value: str, name: str, n: int) -> ExternalIdentifier:
    return ExternalIdentifier(f"{obj_id}_e{n}", scheme, value, obj_id, name)


def document_entry(f: ManifestFacts, codes: dict[str, Code], institution: str = "") -> RegistryObject:
    e = f.entry_uuid
    refs = [f"{f.study_uid}^^^^{rim.STUDY_UID_REF}"]
    if f.accession:
        issuer = f"&{f.accession_issuer}&ISO" if f.accession_issuer else ""
        refs.insert(0, f"{f.accession}^^^{issuer}^{rim.ACCESSION_REF}")
    info = [f"PID-3|{f.source_patient_id}"]
    info += [f"PID-5|{f.patient_name}"] if f.patient_name else []
    info += [f"PID-7|{f.birth_date}"] if f.birth_date else []
    info += [f"PID-8|{f.sex}"] if f.sex else []
    slots = [Slot("creationTime", [f.creation_time]), Slot("languageCode", ["en-US"]),
             Slot("sourcePatientId", [f.source_patient_id]), Slot("sourcePatientInfo", info),
             Slot(rim.REFERENCE_ID_LIST, refs)]
    start = service_start(f.study_date, f.study_time)
    if start:
        slots.append(Slot("serviceStartTime", [start]))
    classes = []
    if institution:
        classes.append(Classification(id=f"{e}_author", scheme=rim.DE_AUTHOR, classified_object=e,
                                      slots=[Slot("authorInstitution", [institution])]))
    n = 0
    for scheme, key in ((rim.DE_CLASS_CODE, "class_code"), (rim.DE_CONFIDENTIALITY, "confidentiality_code"),
                        (rim.DE_FORMAT_CODE, None), (rim.DE_HCFT_CODE, "healthcare_facility_type_code"),
                        (rim.DE_PRACTICE_SETTING, "practice_setting_code"), (rim.DE_TYPE_CODE, "type_code")):
        n += 1
        classes.append(_code(e, scheme, rim.KOS_FORMAT_CODE if key is None else tuple(codes[key]), n))
    for code in event_codes(f.modalities, f.body_parts):
        n += 1
        classes.append(_code(e, rim.DE_EVENT_CODE, code, n))
    return RegistryObject(
        kind="document_entry", id=e, object_type=rim.STABLE, mime_type=MIME_DICOM, name=f.title,
        slots=slots, classifications=classes,
        external_identifiers=[_ext(e, rim.DE_PATIENT_ID, f.patient_id, "XDSDocumentEntry.patientId", 1),
                              _ext(e, rim.DE_UNIQUE_ID, f.kos_uid, "XDSDocumentEntry.uniqueId", 2)])


def submission_set(f: ManifestFacts, codes: dict[str, Code], source_id: str, institution: str = "") -> RegistryObject:
    s = f.submission_set_uuid
    classes = [Classification(id=f"{s}_node", node=rim.SUBMISSION_SET_NODE, classified_object=s)]
    if institution:
        classes.append(Classification(id=f"{s}_author", scheme=rim.SS_AUTHOR, classified_object=s,
                                      slots=[Slot("authorInstitution", [institution])]))
    classes.append(_code(s, rim.SS_CONTENT_TYPE, tuple(codes["content_type_code"]), 1))
    return RegistryObject(
        kind="submission_set", id=s, object_type=rim.REGISTRY_PACKAGE, name="Imaging study manifest",
        slots=[Slot("submissionTime", [f.creation_time])], classifications=classes,
        external_identifiers=[_ext(s, rim.SS_UNIQUE_ID, f.submission_set_uid, "XDSSubmissionSet.uniqueId", 1),
                              _ext(s, rim.SS_SOURCE_ID, source_id, "XDSSubmissionSet.sourceId", 2),
                              _ext(s, rim.SS_PATIENT_ID, f.patient_id, "XDSSubmissionSet.patientId", 3)])


def request(f: ManifestFacts, codes: dict[str, Code], source_id: str, content_id: str,
            institution: str = "") -> etree._Element:
    """The ProvideAndRegisterDocumentSetRequest whose Document is the MTOM part ``content_id``."""
    objects = [submission_set(f, codes, source_id, institution), document_entry(f, codes, institution),
               RegistryObject(kind="association", id=f"{f.submission_set_uuid}_member",
                              object_type=rim.ASSOCIATION_TYPE_OBJ, association_type=rim.HAS_MEMBER,
                              source=f.submission_set_uuid, target=f.entry_uuid,
                              slots=[Slot("SubmissionSetStatus", ["Original"])])]
    if f.replaces:
        objects.append(RegistryObject(kind="association", id=f"{f.submission_set_uuid}_rplc",
                                      object_type=rim.ASSOCIATION_TYPE_OBJ, association_type=rim.RPLC,
                                      source=f.entry_uuid, target=f.replaces))
    root = etree.Element(f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest",
                         nsmap={"xdsb": XDSB, "lcm": ns.LCM, "rim": ns.RIM})
    submit = etree.SubElement(root, rim.q(ns.LCM, "SubmitObjectsRequest"))
    object_list = etree.SubElement(submit, rim.q(ns.RIM, "RegistryObjectList"))
    object_list.extend(rim.to_element(o) for o in objects)
    doc = etree.SubElement(root, f"{{{XDSB}}}Document", id=f.entry_uuid)
    etree.SubElement(doc, f"{{{XOP}}}Include", nsmap={"xop": XOP}, href=f"cid:{content_id}")
    return root


def availability_update(entry_uuid: str, patient_id: str, ss_uid: str, ss_uuid: str, created: str,
                        codes: dict[str, Code], source_id: str, institution: str = "",
                        original: str = rim.APPROVED, new: str = rim.DEPRECATED) -> etree._Element:
    """The ITI-57 SubmitObjectsRequest moving one registered manifest from ``original`` to ``new``."""
    facts = ManifestFacts(kos_uid="", entry_uuid=entry_uuid, submission_set_uid=ss_uid, submission_set_uuid=ss_uuid,
                          patient_id=patient_id, source_patient_id="", creation_time=created)
    objects = [submission_set(facts, codes, source_id, institution),
               RegistryObject(kind="association", id=f"{ss_uuid}_status", object_type=rim.ASSOCIATION_TYPE_OBJ,
                              association_type=rim.UPDATE_AVAILABILITY_STATUS, source=ss_uuid, target=entry_uuid,
                              slots=[Slot("OriginalStatus", [original]), Slot("NewStatus", [new])])]
    root = etree.Element(rim.q(ns.LCM, "SubmitObjectsRequest"), nsmap={"lcm": ns.LCM, "rim": ns.RIM})
    object_list = etree.SubElement(root, rim.q(ns.RIM, "RegistryObjectList"))
    object_list.extend(rim.to_element(o) for o in objects)
    return root
