"""Replay of NIST XDS toolkit test plans, without the wire.

Loads ``testplan.xml`` sections, prepares their requests the way the toolkit does before sending
(patient ids, fresh uniqueIds, symbolic ids to UUIDs, ``UseId``/``UseReport`` substitution, ebRIM 2.1
to 3.0), builds SOAP 1.2 envelopes, reads registry answers and grades them against
``ExpectedStatus``/``ExpectedErrorMessage``/``ExpectedErrorCode``/``ExpectedContents``.
Sending is someone else's job (``nist_runner``), so everything here runs without a server.
"""
from __future__ import annotations

import copy
import datetime as dt
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from lxml import etree

from affinity_domain import ns
from tests.shared import IHE, KIT

KIT_TESTS = KIT / "testkit" / "tests"
EBRS_SCHEMAS = IHE / "schema" / "ebRS"
DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"

RIM2 = "urn:oasis:names:tc:ebxml-regrep:rim:xsd:2.1"
NS = {"rim": ns.RIM, "lcm": ns.LCM, "rs": ns.RS, "query": ns.QUERY, "s": ns.SOAP12, "wsa": ns.WSA}


# ExternalIdentifier identificationSchemes and classification nodes (ITI TF-3 4.2.5)
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
FOLDER_PATIENT_ID = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a"
FOLDER_UNIQUE_ID = "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
FOLDER_NODE = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"
PATIENT_ID_SCHEMES = {DE_PATIENT_ID, SS_PATIENT_ID, FOLDER_PATIENT_ID}
UNIQUE_ID_SCHEMES = {DE_UNIQUE_ID, SS_UNIQUE_ID, FOLDER_UNIQUE_ID}

STATUS_PREFIX = "urn:oasis:names:tc:ebxml-regrep:StatusType:"
EBRS_ASSOCIATION = "urn:oasis:names:tc:ebxml-regrep:AssociationType:"
IHE_ASSOCIATION = "urn:ihe:iti:2007:AssociationType:"
IHE_ASSOCIATION_TYPES = {"APND", "XFRM", "RPLC", "XFRM_RPLC", "signs"}
OBJECT_TYPE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:"

# The replayed tests. The data sets load once per session: 12346 for the stored-query tests,
# 12374 (another patient) for 12368, 12361 (two patients) for the multi-patient query 12364.
DATA_SETS = ("12346", "12374", "12361")
REGISTER_TESTS = ("11996", "11997", "11998a", "12084", "11992", "11993", "11994", "11995", "12004", "12327",
                  "11999", "12000", "12001")
QUERY_TESTS = ("11897", "11898", "11899", "11901", "11902", "11903", "11904", "11905", "11906", "11907",
               "11908", "11909", "15803", "12364", "12368")
# ITI-57, the availability-status operation: 20002 checks its syntax, 12319 deprecates a
# DocumentEntry and reads it back (its other sections are ITI-92 Restricted Metadata Update).
UPDATE_TESTS = ("20002", "12319")
SECTIONS = {"12319": ("submit_version_1", "verify_version_1", "deprecate_version_1", "verify_deprecated")}
ALL_TESTS = DATA_SETS + REGISTER_TESTS + QUERY_TESTS + UPDATE_TESTS

# The toolkit stamps every submission set with its own configured sourceId (xdstest/sourceid.txt);
# some plans' files carry ids that are no OIDs (129.6.58.92.1.1).
SOURCE_ID = "1.3.6.1.4.1.21367.4"

# Patient identity feed tests that other plans read `$patientid$` from (UseReport test="…").
FEED_TESTS = {"15817", "15817b", "15818", "15819", "15820"}
# Bare symbols the toolkit's UI asks the tester for; 12361's readme says which feed gives each.
RUN_PARAMETERS = {"12361": {"$patient_id1$": "15819", "$patient_id2$": "15820"}}


class KitError(Exception):
    """The plan cannot be prepared (a missing file, report or id): a runner problem, not a registry one."""


def local(el) -> str:
    return etree.QName(el).localname


def elements(root):
    """All elements under root (comments and processing instructions skipped)."""
    return (el for el in root.iter() if isinstance(el.tag, str))


def new_uid() -> str:
    """A fresh OID (2.25 = UUID-derived OIDs, ITU-T X.667), short enough for XDS uniqueIds."""
    return f"2.25.{uuid.uuid4().int}"


def new_uuid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def new_patient_id() -> str:
    return f"{uuid.uuid4().hex[:12]}^^^&{DOMAIN}&ISO"


def hl7_now(years_back: int = 0) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return f"{now.year - years_back:04d}{now:%m%d%H%M%S}"


def uses_now(step: "Step", section: "Section") -> bool:
    path = section.directory / (step.metadata_file or "")
    return path.is_file() and "$now$" in path.read_text(errors="replace")


# ---------------------------------------------------------------- test plans

@dataclass
class UseId:
    id: str
    symbol: str
    step: str
    section: str          # AssignedUids | AssignedUuids | AssignedPatientId
    testdir: str | None


@dataclass
class UseReport:
    name: str
    use_as: str
    step: str
    section: str
    test: str | None


@dataclass
class Step:
    id: str
    transaction: str            # Register | StoredQuery | MPQ | PatientIdentityFeed | Null | NewPatientId
    expected_status: str = "Success"
    expected_error_message: str = ""
    expected_error_code: str = ""
    metadata_file: str | None = None
    no_patient_id: bool = False
    alt_patient_id: bool = False
    assign_uuids: bool = False
    assign_uids: bool = True
    no_uid_for: str | None = None
    use_ids: list[UseId] = field(default_factory=list)
    use_reports: list[UseReport] = field(default_factory=list)
    reports: list[tuple[str, str, str]] = field(default_factory=list)    # (name, section, xpath)
    expected_contents: list[tuple[str, int | None]] = field(default_factory=list)
    assertions: list[str] = field(default_factory=list)                   # XPath booleans on the previous answer


@dataclass
class Section:
    test: str
    name: str
    directory: Path
    steps: list[Step]

    @property
    def key(self) -> str:
        return f"{self.test}/{self.name}"


# The snapshot in ../shared lacks 12346/rplc/testplan.xml although index.idx lists the section; this
# is that plan's content as published with the toolkit (RPLC of the document from doc_for_rplc).
MISSING_PLANS = {
    ("12346", "rplc"): """<TestPlan><Test>12346/rplc</Test>
      <TestStep id="rplc"><ExpectedStatus>Success</ExpectedStatus>
        <RegisterTransaction><XDSb/><AssignUuids/>
          <UseId id="Document01" symbol="$rplc_doc_uuid$" step="doc_for_rplc" section="AssignedUuids"
                 testdir="../doc_for_rplc"/>
          <MetadataFile>rplc.xml</MetadataFile>
        </RegisterTransaction></TestStep></TestPlan>""",
}

TRANSACTIONS = {"RegisterTransaction": "Register", "StoredQueryTransaction": "StoredQuery",
                "MPQTransaction": "MPQ", "PatientIdentityFeedTransaction": "PatientIdentityFeed",
                "MuTransaction": "MetadataUpdate",
                "NullTransaction": "Null"}


def section_names(test: str) -> list[str]:
    if test in SECTIONS:
        return list(SECTIONS[test])
    text = (KIT_TESTS / test / "index.idx").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_section(test: str, name: str) -> Section:
    directory = KIT_TESTS / test / name
    plan_file = directory / "testplan.xml"
    if plan_file.exists():
        root = etree.parse(str(plan_file)).getroot()
    elif (test, name) in MISSING_PLANS:
        root = etree.fromstring(MISSING_PLANS[(test, name)])
    else:
        raise KitError(f"no test plan for {test}/{name}")
    return Section(test, name, directory, [_step(el) for el in root if isinstance(el.tag, str)
                                           and el.tag == "TestStep"])


def _step(el) -> Step:
    step = Step(id=el.get("id"), transaction="")
    for part in el:
        if not isinstance(part.tag, str):
            continue
        if part.tag == "ExpectedStatus":
            step.expected_status = part.text.strip()
        elif part.tag == "ExpectedErrorMessage":
            step.expected_error_message = (part.text or "").strip()
        elif part.tag == "ExpectedErrorCode":
            step.expected_error_code = (part.text or "").strip()
        elif part.tag == "AltPatientId":
            step.alt_patient_id = True
        elif part.tag == "NewPatientId":
            step.transaction = "NewPatientId"      # no-op here: every test gets its own patient anyway
        elif part.tag in TRANSACTIONS:
            step.transaction = TRANSACTIONS[part.tag]
            _transaction(step, part)
    if not step.transaction:
        raise KitError(f"step {step.id}: no transaction this runner knows")
    return step


def _transaction(step: Step, tx) -> None:
    for part in tx:
        if not isinstance(part.tag, str):
            continue
        tag = part.tag
        if tag == "MetadataFile":
            step.metadata_file = part.text.strip()
        elif tag == "NoPatientId":
            step.no_patient_id = True
        elif tag == "AssignUuids":
            step.assign_uuids = True
        elif tag == "NoAssignUids":
            # with an id: every object but that one still gets a fresh uniqueId
            step.no_uid_for = part.get("id") or None
            step.assign_uids = step.no_uid_for is not None
        elif tag == "UseId":
            step.use_ids.append(UseId(part.get("id"), part.get("symbol"), part.get("step"),
                                      part.get("section"), part.get("testdir") or None))
        elif tag == "UseReport":
            step.use_reports.append(UseReport(part.get("reportName"), part.get("useAs"), part.get("step"),
                                              part.get("section") or "None", part.get("test") or None))
        elif tag == "Report":
            step.reports.append((part.get("name"), part.get("section"), " ".join(part.text.split())))
        elif tag == "ExpectedContents":
            step.expected_contents = [(local(c), int(c.get("count")) if c.get("count") else None)
                                      for c in part if isinstance(c.tag, str)]
        elif tag == "Assertions":
            step.assertions = [" ".join(a.text.split()) for a in part if a.tag == "Assert"]


# ---------------------------------------------------------------- what earlier steps left behind

@dataclass
class StepLog:
    """What a step assigned and reported, for later UseId/UseReport (the toolkit's log.xml)."""
    assigned: dict[str, dict[str, str]] = field(default_factory=dict)   # AssignedUids -> {symbolic id: value}
    reports: dict[str, str] = field(default_factory=dict)
    answer: etree._Element | None = None


class Linkage(Protocol):
    """Where a step's symbols come from: the runner's memory of earlier steps and fed patients."""

    def step_log(self, test: str, section: str, step: str) -> StepLog: ...

    def feed_patient(self, feed_test: str) -> str: ...

    @property
    def patient_id(self) -> str: ...

    @property
    def unknown_patient_id(self) -> str: ...


def locate(section: Section, testdir: str | None) -> tuple[str, str]:
    """(test, section) of a UseId testdir, which is relative to the current section's directory."""
    if not testdir:
        return section.test, section.name
    target = (section.directory / testdir).resolve().relative_to(KIT_TESTS.resolve())
    if len(target.parts) != 2:
        raise KitError(f"{section.key}: testdir {testdir} is not a test section")
    return target.parts[0], target.parts[1]


def resolve_use_id(use: UseId, section: Section, link: Linkage) -> str:
    test, name = locate(section, use.testdir)
    assigned = link.step_log(test, name, use.step).assigned.get(use.section, {})
    if use.id not in assigned:
        raise KitError(f"{section.key}: {test}/{name} step {use.step} assigned no {use.section} for {use.id}")
    return assigned[use.id]


def resolve_use_report(use: UseReport, section: Section, link: Linkage) -> str:
    if use.test in FEED_TESTS:
        return link.feed_patient(use.test)
    test = use.test or section.test
    log = link.step_log(test, use.section, use.step)
    reports = log.reports
    # The toolkit also reports each UUID AssignUuids gave, as "<symbolic id>_uuid".
    uuids = log.assigned.get("AssignedUuids", {})
    if use.name not in reports and use.name.endswith("_uuid") and use.name[:-5] in uuids:
        return uuids[use.name[:-5]]
    if use.name not in reports:
        raise KitError(f"{section.key}: {test}/{use.section} step {use.step} reported no {use.name}")
    return reports[use.name]


def substitute(root, symbol: str, value: str) -> None:
    """Replace a symbol in every attribute value and text, as the toolkit's linkage does."""
    for el in elements(root):
        if el.text and symbol in el.text:
            el.text = el.text.replace(symbol, value)
        for name, text in el.attrib.items():
            if symbol in text:
                el.set(name, text.replace(symbol, value))


# ---------------------------------------------------------------- preparing a submission

def registry_objects(root):
    return [el for el in elements(root) if local(el) in ("ExtrinsicObject", "RegistryPackage")]


def external_ids(obj, schemes: set[str]):
    return [c for c in obj if isinstance(c.tag, str) and local(c) == "ExternalIdentifier"
            and c.get("identificationScheme") in schemes]


def assign_patient_id(root, patient_id: str) -> dict[str, str]:
    assigned = {}
    for obj in registry_objects(root):
        for ei in external_ids(obj, PATIENT_ID_SCHEMES):
            ei.set("value", patient_id)
            assigned[obj.get("id")] = patient_id
    return assigned


def assign_unique_ids(root, skip: str | None = None, allocate: Callable[[], str] = new_uid) -> dict[str, str]:
    assigned = {}
    for obj in registry_objects(root):
        if obj.get("id") == skip:
            continue
        for ei in external_ids(obj, UNIQUE_ID_SCHEMES):
            ei.set("value", allocate())
            assigned[obj.get("id")] = ei.get("value")
    return assigned


REFERENCES = ("classifiedObject", "sourceObject", "targetObject", "registryObject")


def assign_uuids(root, allocate: Callable[[], str] = new_uuid) -> dict[str, str]:
    """Give every symbolically named object a UUID and point all references at it."""
    assigned: dict[str, str] = {}
    for el in elements(root):
        symbolic = el.get("id")
        if symbolic and local(el) != "ObjectRef" and not symbolic.startswith("urn:uuid:"):
            assigned.setdefault(symbolic, allocate())
            el.set("id", assigned[symbolic])
    for el in elements(root):
        for name in REFERENCES:
            ref = el.get(name)
            if ref is None or ref.startswith("urn:uuid:"):
                continue
            if ref not in assigned:
                raise KitError(f"{name}={ref} names no object of the submission")
            el.set(name, assigned[ref])
    return assigned


@dataclass
class Prepared:
    request: etree._Element               # lcm:SubmitObjectsRequest or query:AdhocQueryRequest
    log: StepLog


def prepare(step: Step, section: Section, link: Linkage,
            uid: Callable[[], str] = new_uid, uuid_: Callable[[], str] = new_uuid) -> Prepared:
    """The request a step sends, in the toolkit's order of preparation."""
    if not step.metadata_file:
        raise KitError(f"{section.key}/{step.id}: no MetadataFile")
    path = section.directory / step.metadata_file
    if not path.exists():
        raise KitError(f"{section.key}/{step.id}: {path} missing")
    root = etree.parse(str(path), etree.XMLParser(remove_blank_text=True)).getroot()
    log = StepLog()
    text = etree.tostring(root, encoding="unicode")
    for symbol, feed_test in RUN_PARAMETERS.get(section.test, {}).items():
        if symbol in text:
            substitute(root, symbol, link.feed_patient(feed_test))
    for use in step.use_reports:
        substitute(root, use.use_as, resolve_use_report(use, section, link))
    substitute(root, "$now$", hl7_now())
    substitute(root, "$lastyear$", hl7_now(years_back=1))
    if step.transaction in ("Register", "MetadataUpdate"):       # both submit metadata
        if not step.no_patient_id:
            pid = link.unknown_patient_id if step.alt_patient_id else link.patient_id
            log.assigned["AssignedPatientId"] = assign_patient_id(root, pid)
        for use in step.use_ids:
            substitute(root, use.symbol, resolve_use_id(use, section, link))
        if step.assign_uids:
            log.assigned["AssignedUids"] = assign_unique_ids(root, step.no_uid_for, uid)
        for package in registry_objects(root):
            for ei in external_ids(package, {SS_SOURCE_ID}):
                ei.set("value", SOURCE_ID)
        if step.assign_uuids:
            log.assigned["AssignedUuids"] = assign_uuids(root, uuid_)
        root = to_ebrim3(root)
        for name, where, xpath in step.reports:
            if where == "InputMetadata":
                log.reports[name] = _first_string(root.xpath(xpath))
    else:
        for use in step.use_ids:
            substitute(root, use.symbol, resolve_use_id(use, section, link))
    leftover = sorted(set(re.findall(r"\$[A-Za-z_][A-Za-z_0-9]*\$", etree.tostring(root, encoding="unicode"))))
    if leftover:
        raise KitError(f"{section.key}/{step.id}: unresolved symbols {leftover}")
    return Prepared(root, log)


def _first_string(result) -> str:
    if isinstance(result, list):
        if not result:
            return ""
        result = result[0]
    return result if isinstance(result, str) else str(getattr(result, "text", result))


# ---------------------------------------------------------------- ebRIM 2.1 -> 3.0

# ebRIM 3.0 wants RegistryObject children in this order; anything else follows.
_LEADING = ("Slot", "Name", "Description", "VersionInfo", "Classification", "ExternalIdentifier")
_TYPED = {"RegistryPackage", "Association", "Classification", "ExternalIdentifier"}


def to_ebrim3(root):
    """A SubmitObjectsRequest in ebRIM 3.0; 2.1 input is translated, 3.0 input is returned unchanged."""
    if etree.QName(root).namespace == ns.LCM:
        return root
    source = root.find(f"{{{RIM2}}}LeafRegistryObjectList")
    if source is None:
        raise KitError(f"not a SubmitObjectsRequest: {root.tag}")
    request = etree.Element(f"{{{ns.LCM}}}SubmitObjectsRequest", nsmap={"lcm": ns.LCM, "rim": ns.RIM})
    target = etree.SubElement(request, f"{{{ns.RIM}}}RegistryObjectList")
    counter = iter(range(1, 1_000_000))
    for obj in source:
        # ObjectRefs only named objects of the registry for 2.1; 3.0 needs none of them
        if isinstance(obj.tag, str) and local(obj) != "ObjectRef":
            target.append(_translate(obj, None, counter))
    return request


def _translate(el, parent_id: str | None, counter):
    name = local(el)
    out = etree.Element(f"{{{ns.RIM}}}{name}")
    for attr, value in el.attrib.items():
        attr_name = etree.QName(attr).localname
        if attr_name in ("majorVersion", "minorVersion"):
            continue          # 2.1 versioning has no 3.0 counterpart in a submission
        if attr_name == "lang":
            out.set(f"{{{ns.XML}}}lang", value)
            continue
        if attr_name == "status" and ":" not in value:
            value = STATUS_PREFIX + value
        if attr_name == "associationType" and ":" not in value:
            value = (IHE_ASSOCIATION if value in IHE_ASSOCIATION_TYPES else EBRS_ASSOCIATION) + value
        out.set(attr_name, value)
    if name in _TYPED:
        out.set("objectType", OBJECT_TYPE + name)
    if name in ("Association", "Classification", "ExternalIdentifier") and not out.get("id"):
        out.set("id", f"id_{next(counter)}")     # 3.0 requires ids; symbolic ones are fine
    if name == "ExternalIdentifier":
        out.set("registryObject", parent_id)
    if name == "Classification" and parent_id and not out.get("classifiedObject"):
        out.set("classifiedObject", parent_id)
    children = [c for c in el if isinstance(c.tag, str) and local(c) != "ObjectRef"]
    ordered = [c for lead in _LEADING for c in children if local(c) == lead]
    ordered += [c for c in children if local(c) not in _LEADING]
    for child in ordered:
        out.append(_translate(child, out.get("id"), counter))
    if el.text and el.text.strip():
        out.text = el.text
    return out


# ---------------------------------------------------------------- the wire format

def envelope(request, action: str, to: str, headers=()) -> bytes:
    env = etree.Element(f"{{{ns.SOAP12}}}Envelope", nsmap={"s": ns.SOAP12, "wsa": ns.WSA})
    header = etree.SubElement(env, f"{{{ns.SOAP12}}}Header")
    etree.SubElement(header, f"{{{ns.WSA}}}Action", {f"{{{ns.SOAP12}}}mustUnderstand": "1"}).text = action
    etree.SubElement(header, f"{{{ns.WSA}}}MessageID").text = new_uuid()
    etree.SubElement(header, f"{{{ns.WSA}}}To").text = to
    reply = etree.SubElement(header, f"{{{ns.WSA}}}ReplyTo")
    etree.SubElement(reply, f"{{{ns.WSA}}}Address").text = ns.WSA_ANONYMOUS
    header.extend(headers)
    etree.SubElement(env, f"{{{ns.SOAP12}}}Body").append(copy.deepcopy(request))
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def action_for(step: Step) -> str:
    return {"Register": ns.REGISTER, "StoredQuery": ns.STORED_QUERY, "MPQ": ns.MULTI_PATIENT_QUERY,
            "MetadataUpdate": ns.UPDATE}[step.transaction]


@dataclass
class RegistryError:
    code: str
    context: str
    severity: str


@dataclass
class Answer:
    status: str                      # Success | Failure | PartialSuccess | Fault
    errors: list[RegistryError]
    body: etree._Element | None      # the RegistryResponse / AdhocQueryResponse / Fault

    @property
    def codes(self) -> list[str]:
        return [e.code for e in self.errors]


def read_answer(envelope_bytes: bytes) -> Answer:
    root = etree.fromstring(envelope_bytes)
    body = root.find(f"{{{ns.SOAP12}}}Body")
    if body is None or not len(body):
        raise ValueError("no SOAP 1.2 Body in the answer")
    payload = body[0]
    if local(payload) == "Fault":
        reason = " ".join(payload.xpath(".//*[local-name()='Text']/text()"))
        return Answer("Fault", [RegistryError("SOAPFault", reason, "Error")], payload)
    errors = [RegistryError(e.get("errorCode", ""), e.get("codeContext", ""),
                            e.get("severity", "").rsplit(":", 1)[-1])
              for e in payload.iter(f"{{{ns.RS}}}RegistryError")]
    return Answer(payload.get("status", "").rsplit(":", 1)[-1], errors, payload)


# ---------------------------------------------------------------- grading

def grade(step: Step, answer: Answer) -> list[str]:
    """Everything the plan expected but the answer did not show; empty when the step passes."""
    problems = []
    if answer.status != step.expected_status:
        problems.append(f"status {answer.status}, expected {step.expected_status}")
    if step.expected_error_message and not any(
            step.expected_error_message in e.code or step.expected_error_message in e.context
            for e in answer.errors):
        problems.append(f"no error mentions {step.expected_error_message}")
    if step.expected_error_code and step.expected_error_code not in answer.codes:
        problems.append(f"errorCode {step.expected_error_code} missing")
    if step.expected_contents and answer.body is not None and answer.status != "Fault":
        problems += check_contents(step.expected_contents, Contents(answer.body))
    return problems


class Contents:
    """The objects of a query answer, sorted into the toolkit's metadata categories."""

    def __init__(self, response):
        objects = response.find(f"{{{ns.RIM}}}RegistryObjectList")
        kids = [] if objects is None else [c for c in objects if isinstance(c.tag, str)]
        self.documents = [c for c in kids if local(c) == "ExtrinsicObject"]
        self.associations = [c for c in kids if local(c) == "Association"]
        self.object_refs = [c for c in kids if local(c) == "ObjectRef"]
        packages = [c for c in kids if local(c) == "RegistryPackage"]
        nodes = {(c.get("classifiedObject"), c.get("classificationNode"))
                 for c in objects.iter(f"{{{ns.RIM}}}Classification")} if objects is not None else set()
        self.submission_sets = [p for p in packages if self._is(p, nodes, SS_NODE, SS_UNIQUE_ID)]
        self.folders = [p for p in packages if self._is(p, nodes, FOLDER_NODE, FOLDER_UNIQUE_ID)]

    @staticmethod
    def _is(package, nodes, node, unique_scheme) -> bool:
        return (package.get("id"), node) in nodes or bool(external_ids(package, {unique_scheme}))

    def association(self, source, target, kind: str):
        for a in self.associations:
            if (a.get("sourceObject"), a.get("targetObject"), a.get("associationType")) == \
                    (source.get("id"), target.get("id"), kind):
                return a
        return None


HAS_MEMBER = EBRS_ASSOCIATION + "HasMember"


def _status(obj) -> str:
    return (obj.get("status") or "").rsplit(":", 1)[-1]


def check_contents(checks: list[tuple[str, int | None]], c: Contents) -> list[str]:
    problems: list[str] = []
    for name, count in checks:
        if name not in CHECKS:
            problems.append(f"ExpectedContents <{name}/> not supported by this runner")
            continue
        problems += [f"<{name}/>: {p}" for p in CHECKS[name](c, count)]
    return problems


def _count(what: str, items, count) -> list[str]:
    return [] if len(items) == count else [f"found {len(items)} {what} instead of {count}"]


def _none(c, _):
    return (_count("SubmissionSets", c.submission_sets, 0) + _count("Documents", c.documents, 0)
            + _count("Folders", c.folders, 0) + _count("Associations", c.associations, 0))


def _object_refs(c, count):
    return _count("ObjectRefs", c.object_refs, count) + _none(c, None)


def _ss_approved(c, _):
    if not c.submission_sets:
        return ["no SubmissionSet"]
    status = _status(c.submission_sets[0])
    return [] if status == "Approved" else [f"SubmissionSet status {status or 'missing'}"]


def _all_docs(status: str):
    def check(c, _):
        return [f"DocumentEntry {d.get('id')} status {_status(d) or 'missing'}, expected {status}"
                for d in c.documents if _status(d) != status]
    return check


def _ss_with(docs: int, folders: int):
    """A SubmissionSet holding its documents and folders, the documents filed in every folder."""
    def check(c, _):
        problems = ([] if c.submission_sets else ["no SubmissionSet"]) + _count("Documents", c.documents, docs) \
            + _count("Folders", c.folders, folders)
        if problems:
            return problems
        ss = c.submission_sets[0]
        # SS->doc, SS->folder, folder->doc, and SS->(folder->doc): a filing is itself a member of the SS
        problems = _count("Associations", c.associations, docs + folders + 2 * docs * folders)
        for member in c.documents + c.folders:
            if c.association(ss, member, HAS_MEMBER) is None:
                problems.append(f"no HasMember from the SubmissionSet to {member.get('id')}")
        for folder in c.folders:
            for doc in c.documents:
                filing = c.association(folder, doc, HAS_MEMBER)
                if filing is None:
                    problems.append(f"document {doc.get('id')} not in folder {folder.get('id')}")
                elif c.association(ss, filing, HAS_MEMBER) is None:
                    problems.append(f"filing {filing.get('id')} is not a member of the SubmissionSet")
        return problems
    return check


def _ss_with_one_doc(c, _):
    return _ss_with(1, 0)(c, None) + _ss_approved(c, None)


def _has_relation(kind: str):
    def check(c, _):
        urn = IHE_ASSOCIATION + kind
        found = [a for a in c.associations if a.get("associationType") == urn]
        return [] if found else [f"no {kind} association"]
    return check


CHECKS: dict[str, Callable[[Contents, int | None], list[str]]] = {
    "Documents": lambda c, n: _count("Documents", c.documents, n),
    "SubmissionSets": lambda c, n: _count("SubmissionSets", c.submission_sets, n),
    "Folders": lambda c, n: _count("Folders", c.folders, n),
    "Associations": lambda c, n: _count("Associations", c.associations, n),
    "ObjectRefs": _object_refs,
    "None": _none,
    "SSApproved": _ss_approved,
    "DocApp": _all_docs("Approved"),
    "DocDep": _all_docs("Deprecated"),
    "SSwithOneDoc": _ss_with_one_doc,
    "SSwithOneFol": _ss_with(0, 1),
    "SSwithOneDocOneFol": _ss_with(1, 1),
    "SSwithTwoDocOneFol": _ss_with(2, 1),
    "HasRPLC": _has_relation("RPLC"),
    "HasAPND": _has_relation("APND"),
    "HasXFRM_RPLC": _has_relation("XFRM_RPLC"),
}


def check_assertions(step: Step, previous: etree._Element | None) -> list[str]:
    """A NullTransaction's XPath assertions, evaluated on the previous step's answer (DataRef THIS)."""
    if previous is None:
        return ["no earlier answer to assert on"]
    return [f"assertion failed: {xp}" for xp in step.assertions if not previous.xpath(f"boolean({xp})")]
