"""The ebRIM 3.0 metadata model of XDS: parse registry objects from lxml and serialize them back.

Objects keep the profile's vocabulary (``document_entry``, ``submission_set``, ``folder``,
``association``); the constants are the classification and identification schemes of ITI TF-3 4.2.5.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree
from pydicom.uid import KeyObjectSelectionDocumentStorage

from .ns import LCM, QUERY, RIM, RS
NSMAP = {"rim": RIM, "rs": RS, "lcm": LCM, "query": QUERY}


def q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


# Object types and status values
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
REGISTRY_PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"
ASSOCIATION_TYPE_OBJ = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"
CLASSIFICATION_OBJ = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
EXTERNAL_ID_OBJ = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
FOLDER_NODE = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"

STATUS_PREFIX = "urn:oasis:names:tc:ebxml-regrep:StatusType:"
APPROVED = STATUS_PREFIX + "Approved"
DEPRECATED = STATUS_PREFIX + "Deprecated"
SUBMITTED = STATUS_PREFIX + "Submitted"

# Association types
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
APND = "urn:ihe:iti:2007:AssociationType:APND"
XFRM = "urn:ihe:iti:2007:AssociationType:XFRM"
XFRM_RPLC = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC"
SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
IS_SNAPSHOT_OF = "urn:ihe:iti:2010:AssociationType:IsSnapshotOf"
RELATIONSHIP_TYPES = (RPLC, APND, XFRM, XFRM_RPLC, SIGNS, IS_SNAPSHOT_OF)
UPDATE_AVAILABILITY_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"   # ITI-57 only
ASSOCIATION_TYPES = (HAS_MEMBER,) + RELATIONSHIP_TYPES

# DocumentEntry schemes
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
DE_EVENT_CODE = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
DE_FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
DE_HCFT_CODE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
DE_PRACTICE_SETTING = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
DE_LIMITED_METADATA = "urn:uuid:ab9b591b-83ab-4d03-8f5d-f93b1fb92e85"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
# SubmissionSet schemes
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
# Folder schemes
FOL_CODE_LIST = "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5"
FOL_PATIENT_ID = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a"
FOL_UNIQUE_ID = "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a"

# DocumentEntry.referenceIdList (a CXi each) and the identifier types XDS-I.b puts in it
REFERENCE_ID_LIST = "urn:ihe:iti:xds:2013:referenceIdList"
ACCESSION_REF = "urn:ihe:iti:xds:2013:accession"
STUDY_UID_REF = "urn:ihe:iti:xds:2016:studyInstanceUID"
# An XDS-I.b manifest's formatCode: the KOS SOP Class UID, coded in DICOM's UID scheme.
KOS_FORMAT_CODE = (KeyObjectSelectionDocumentStorage, "1.2.840.10008.2.6.1", "Key Object Selection Document")
KOS_FORMAT = f"{KOS_FORMAT_CODE[0]}^^{KOS_FORMAT_CODE[1]}"       # as $XDSDocumentEntryFormatCode says it

PATIENT_ID_SCHEME = {"document_entry": DE_PATIENT_ID, "submission_set": SS_PATIENT_ID,
                     "folder": FOL_PATIENT_ID}
UNIQUE_ID_SCHEME = {"document_entry": DE_UNIQUE_ID, "submission_set": SS_UNIQUE_ID,
                    "folder": FOL_UNIQUE_ID}
AUTHOR_SCHEME = {"document_entry": DE_AUTHOR, "submission_set": SS_AUTHOR}


@dataclass
class Slot:
    name: str
    values: list[str]


@dataclass
class Classification:
    id: str
    scheme: str = ""              # classificationScheme (external classification: a coded value)
    node: str = ""                # classificationNode (internal classification: SS/Folder marker)
    classified_object: str = ""
    node_representation: str = ""
    name: str = ""
    slots: list[Slot] = field(default_factory=list)

    def slot(self, name: str) -> list[str]:
        return next((s.values for s in self.slots if s.name == name), [])


@dataclass
class ExternalIdentifier:
    id: str
    scheme: str
    value: str
    registry_object: str = ""
    name: str = ""


@dataclass
class RegistryObject:
    """A DocumentEntry, SubmissionSet, Folder or Association."""

    kind: str                      # document_entry | submission_set | folder | association
    id: str
    lid: str = ""
    object_type: str = ""
    status: str = ""
    home: str = ""
    name: str | None = None
    description: str | None = None
    version_name: str = ""
    slots: list[Slot] = field(default_factory=list)
    classifications: list[Classification] = field(default_factory=list)
    external_identifiers: list[ExternalIdentifier] = field(default_factory=list)
    mime_type: str = ""            # document_entry
    is_opaque: str = ""
    association_type: str = ""     # association
    source: str = ""
    target: str = ""

    def slot(self, name: str) -> list[str]:
        return next((s.values for s in self.slots if s.name == name), [])

    def slot_value(self, name: str) -> str | None:
        values = self.slot(name)
        return values[0] if values else None

    def set_slot(self, name: str, values: list[str]) -> None:
        for s in self.slots:
            if s.name == name:
                s.values = list(values)
                return
        self.slots.append(Slot(name, list(values)))

    def external_id(self, scheme: str) -> str | None:
        return next((e.value for e in self.external_identifiers if e.scheme == scheme), None)

    def set_external_id(self, scheme: str, value: str) -> None:
        for e in self.external_identifiers:
            if e.scheme == scheme:
                e.value = value

    def codes(self, scheme: str) -> list[Classification]:
        return [c for c in self.classifications if c.scheme == scheme]

    @property
    def patient_id(self) -> str | None:
        scheme = PATIENT_ID_SCHEME.get(self.kind)
        return self.external_id(scheme) if scheme else None

    @property
    def unique_id(self) -> str | None:
        scheme = UNIQUE_ID_SCHEME.get(self.kind)
        return self.external_id(scheme) if scheme else None


def code_key(c: Classification) -> str:
    """The stored-query form of a coded value: ``code^^codingScheme``."""
    scheme = c.slot("codingScheme")
    return f"{c.node_representation}^^{scheme[0] if scheme else ''}"


# ---------------------------------------------------------------- parsing

def _text(el: etree._Element | None, tag: str) -> str | None:
    if el is None:
        return None
    child = el.find(q(RIM, tag))
    if child is None:
        return None
    ls = child.find(q(RIM, "LocalizedString"))
    return ls.get("value", "") if ls is not None else ""


def _slots(el: etree._Element) -> list[Slot]:
    return [Slot(s.get("name", ""), [v.text or "" for v in s.iterfind(f"{{{RIM}}}ValueList/{{{RIM}}}Value")])
            for s in el.iterfind(q(RIM, "Slot"))]


def _classification(el: etree._Element, owner: str = "") -> Classification:
    return Classification(
        id=el.get("id", ""), scheme=el.get("classificationScheme", ""),
        node=el.get("classificationNode", ""),
        classified_object=el.get("classifiedObject", owner),
        node_representation=el.get("nodeRepresentation", ""),
        name=_text(el, "Name") or "", slots=_slots(el))


def _common(kind: str, el: etree._Element) -> RegistryObject:
    oid = el.get("id", "")
    version = el.find(q(RIM, "VersionInfo"))
    return RegistryObject(
        kind=kind, id=oid, lid=el.get("lid", ""), object_type=el.get("objectType", ""),
        status=el.get("status", ""), home=el.get("home", ""),
        name=_text(el, "Name"), description=_text(el, "Description"),
        version_name=version.get("versionName", "") if version is not None else "",
        slots=_slots(el),
        classifications=[_classification(c, oid) for c in el.iterfind(q(RIM, "Classification"))],
        external_identifiers=[ExternalIdentifier(e.get("id", ""), e.get("identificationScheme", ""),
                                                 e.get("value", ""), e.get("registryObject", oid),
                                                 _text(e, "Name") or "")
                              for e in el.iterfind(q(RIM, "ExternalIdentifier"))])


def parse_object(el: etree._Element) -> RegistryObject | None:
    tag = etree.QName(el).localname
    if tag == "ExtrinsicObject":
        obj = _common("document_entry", el)
        obj.mime_type = el.get("mimeType", "")
        obj.is_opaque = el.get("isOpaque", "")
        return obj
    if tag == "RegistryPackage":
        obj = _common("registry_package", el)
        _classify_package(obj)
        return obj
    if tag == "Association":
        obj = _common("association", el)
        obj.association_type = el.get("associationType", "")
        obj.source = el.get("sourceObject", "")
        obj.target = el.get("targetObject", "")
        return obj
    return None


def _classify_package(obj: RegistryObject) -> None:
    nodes = {c.node for c in obj.classifications if c.node}
    if SUBMISSION_SET_NODE in nodes:
        obj.kind = "submission_set"
    elif FOLDER_NODE in nodes:
        obj.kind = "folder"


@dataclass
class ObjectList:
    """What a SubmitObjectsRequest (or a query response) carries."""

    objects: list[RegistryObject] = field(default_factory=list)
    object_refs: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)   # element names we do not know

    def of_kind(self, kind: str) -> list[RegistryObject]:
        return [o for o in self.objects if o.kind == kind]


def parse_object_list(container: etree._Element) -> ObjectList:
    """Parse a ``rim:RegistryObjectList``; top-level Classifications join the package they classify."""
    result = ObjectList()
    loose: list[Classification] = []
    for el in container:
        if not isinstance(el.tag, str):
            continue
        tag = etree.QName(el).localname
        if tag == "Classification":
            loose.append(_classification(el))
        elif tag == "ObjectRef":
            result.object_refs.append(el.get("id", ""))
        else:
            obj = parse_object(el)
            if obj is None:
                result.unknown.append(tag)
            else:
                result.objects.append(obj)
    by_id = {o.id: o for o in result.objects}
    for c in loose:
        target = by_id.get(c.classified_object)
        if target is None:
            result.unknown.append("Classification")
            continue
        target.classifications.append(c)
        if target.kind == "registry_package":
            _classify_package(target)
    return result


# ---------------------------------------------------------------- serializing

def _sub(parent: etree._Element, tag: str, **attrs: str) -> etree._Element:
    return etree.SubElement(parent, q(RIM, tag), {k: v for k, v in attrs.items() if v != ""})


def _add_text(parent: etree._Element, tag: str, value: str | None) -> None:
    if value is None:
        return
    el = _sub(parent, tag)
    if value != "":
        _sub(el, "LocalizedString", value=value)


def _add_slots(parent: etree._Element, slots: list[Slot]) -> None:
    for s in slots:
        values = _sub(_sub(parent, "Slot", name=s.name), "ValueList")
        for v in s.values:
            etree.SubElement(values, q(RIM, "Value")).text = v


def to_element(obj: RegistryObject) -> etree._Element:
    """Serialize in the element order of rim.xsd."""
    tag = {"document_entry": "ExtrinsicObject", "association": "Association"}.get(obj.kind, "RegistryPackage")
    attrs = {"id": obj.id, "lid": obj.lid, "objectType": obj.object_type, "status": obj.status,
             "home": obj.home}
    if obj.kind == "document_entry":
        attrs.update(mimeType=obj.mime_type, isOpaque=obj.is_opaque)
    if obj.kind == "association":
        attrs.update(associationType=obj.association_type, sourceObject=obj.source,
                     targetObject=obj.target)
    el = etree.Element(q(RIM, tag), {k: v for k, v in attrs.items() if v}, nsmap={"rim": RIM})
    _add_slots(el, obj.slots)
    _add_text(el, "Name", obj.name)
    _add_text(el, "Description", obj.description)
    if obj.version_name:
        _sub(el, "VersionInfo", versionName=obj.version_name)
    for c in obj.classifications:
        cel = _sub(el, "Classification", id=c.id, classificationScheme=c.scheme,
                   classificationNode=c.node, classifiedObject=c.classified_object,
                   objectType=CLASSIFICATION_OBJ)
        if c.scheme or c.node_representation:
            cel.set("nodeRepresentation", c.node_representation)
        _add_slots(cel, c.slots)
        _add_text(cel, "Name", c.name or None)
    for e in obj.external_identifiers:
        eel = _sub(el, "ExternalIdentifier", id=e.id, registryObject=e.registry_object,
                   identificationScheme=e.scheme, value=e.value, objectType=EXTERNAL_ID_OBJ)
        _add_text(eel, "Name", e.name or None)
    return el


_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                               "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})
_TEXT_SPECIAL = re.compile(r"[&<>\r]").search
_ATTR_SPECIAL = re.compile(r"[&<>\"\n\r\t]").search


def _text_escaped(v: str) -> str:
    return v.translate(_TEXT_ESCAPES) if _TEXT_SPECIAL(v) else v


def _attr_escaped(v: str) -> str:
    return v.translate(_ATTR_ESCAPES) if _ATTR_SPECIAL(v) else v


def _attrs(attrs) -> str:
    return "".join(f' {k}="{_attr_escaped(v)}"' for k, v in attrs if v)


def _slots_xml(slots: list[Slot], out: list[str]) -> None:
    for s in slots:
        out.append(f'<rim:Slot{_attrs((("name", s.name),))}>')
        if s.values:
            out.append("<rim:ValueList>")
            out.extend(f"<rim:Value>{_text_escaped(v)}</rim:Value>" if v else "<rim:Value></rim:Value>"
                       for v in s.values)
            out.append("</rim:ValueList></rim:Slot>")
        else:
            out.append("<rim:ValueList/></rim:Slot>")


def _text_xml(tag: str, value: str | None, out: list[str]) -> None:
    if value is None:
        return
    out.append(f'<rim:{tag}><rim:LocalizedString{_attrs((("value", value),))}/></rim:{tag}>' if value
               else f"<rim:{tag}/>")


def to_bytes(obj: RegistryObject) -> bytes:
    """``etree.tostring(to_element(obj))``, byte for byte, without building the tree: the registry
    stores every object it registers this way, and building it with lxml cost a fifth of an ITI-42."""
    tag = {"document_entry": "ExtrinsicObject", "association": "Association"}.get(obj.kind, "RegistryPackage")
    attrs = [("id", obj.id), ("lid", obj.lid), ("objectType", obj.object_type), ("status", obj.status),
             ("home", obj.home)]
    if obj.kind == "document_entry":
        attrs += [("mimeType", obj.mime_type), ("isOpaque", obj.is_opaque)]
    if obj.kind == "association":
        attrs += [("associationType", obj.association_type), ("sourceObject", obj.source),
                  ("targetObject", obj.target)]
    out = [f'<rim:{tag} xmlns:rim="{RIM}"{_attrs(attrs)}>']
    _slots_xml(obj.slots, out)
    _text_xml("Name", obj.name, out)
    _text_xml("Description", obj.description, out)
    if obj.version_name:
        out.append(f'<rim:VersionInfo{_attrs((("versionName", obj.version_name),))}/>')
    for c in obj.classifications:
        cattrs = [("id", c.id), ("classificationScheme", c.scheme), ("classificationNode", c.node),
                  ("classifiedObject", c.classified_object), ("objectType", CLASSIFICATION_OBJ)]
        head = f"<rim:Classification{_attrs(cattrs)}"
        if c.scheme or c.node_representation:
            head += f' nodeRepresentation="{_attr_escaped(c.node_representation)}"'
        inner: list[str] = []
        _slots_xml(c.slots, inner)
        _text_xml("Name", c.name or None, inner)
        out.append(f"{head}>{''.join(inner)}</rim:Classification>" if inner else head + "/>")
    for e in obj.external_identifiers:
        eattrs = [("id", e.id), ("registryObject", e.registry_object), ("identificationScheme", e.scheme),
                  ("value", e.value), ("objectType", EXTERNAL_ID_OBJ)]
        head = f"<rim:ExternalIdentifier{_attrs(eattrs)}"
        out.append(f'{head}><rim:Name><rim:LocalizedString{_attrs((("value", e.name),))}/></rim:Name>'
                   f"</rim:ExternalIdentifier>" if e.name else head + "/>")
    if len(out) == 1:
        out[0] = out[0][:-1] + "/>"
    else:
        out.append(f"</rim:{tag}>")
    return "".join(out).encode("ascii", "xmlcharrefreplace")


def object_ref(oid: str, home: str = "") -> etree._Element:
    return etree.Element(q(RIM, "ObjectRef"), {"id": oid, **({"home": home} if home else {})},
                         nsmap={"rim": RIM})
