"""Test-side XDS client: builds ebRIM 3.0 requests as text (independently of the code under test),
sends them over HTTP and MLLP, and reads the answers."""
from __future__ import annotations

import http.client
import socket
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

from xml.sax.saxutils import escape

from lxml import etree

from affinity_domain import ns

DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"
NS = {"rim": ns.RIM, "rs": ns.RS, "query": ns.QUERY, "lcm": ns.LCM, "s": ns.SOAP12, "wsa": ns.WSA}
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"


def new_oid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def new_patient() -> str:
    return f"P{uuid.uuid4().hex[:10]}^^^&{DOMAIN}&ISO"


def envelope(action: str, body: str, message_id: str | None = None) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{NS["s"]}" xmlns:wsa="{NS["wsa"]}">'
            f'<s:Header><wsa:Action s:mustUnderstand="1">{action}</wsa:Action>'
            f'<wsa:MessageID>{message_id or "urn:uuid:" + str(uuid.uuid4())}</wsa:MessageID>'
            f'<wsa:ReplyTo><wsa:Address>{ns.WSA_ANONYMOUS}</wsa:Address></wsa:ReplyTo>'
            f'</s:Header><s:Body>{body}</s:Body></s:Envelope>').encode()


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes
    root: etree._Element | None = None

    @property
    def payload(self) -> etree._Element:
        return self.root.find("s:Body", NS)[0]

    @property
    def response_status(self) -> str:
        return self.payload.get("status", "").rsplit(":", 1)[-1]

    @property
    def error_codes(self) -> list[str]:
        return [e.get("errorCode") for e in self.payload.iterfind(".//rs:RegistryError", NS)]

    @property
    def action(self) -> str:
        return self.root.findtext("s:Header/wsa:Action", namespaces=NS)

    @property
    def relates_to(self) -> str:
        return self.root.findtext("s:Header/wsa:RelatesTo", namespaces=NS)

    def objects(self, tag: str) -> list[etree._Element]:
        return self.payload.findall(f"rim:RegistryObjectList/rim:{tag}", NS)


def post(url: str, body: bytes, content_type: str = "application/soap+xml; charset=UTF-8",
         timeout: float = 30) -> Reply:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", u.path, body=body, headers={"Content-Type": content_type})
        r = conn.getresponse()
        data = r.read()
        ctype = r.getheader("Content-Type", "")
    finally:
        conn.close()
    xml = data
    if ctype.startswith("multipart/related"):
        start = data.index(b"<")
        end = data.rindex(b">") + 1
        xml = data[start:end]
        xml = xml[xml.index(b"<s:Envelope") if b"<s:Envelope" in xml else xml.index(b"<soapenv:Envelope"):]
        xml = xml[:xml.rindex(b"Envelope>") + len("Envelope>")]
    root = etree.fromstring(xml) if xml.strip() else None
    return Reply(r.status, ctype, data, root)


def mtom(body: bytes, action: str) -> tuple[bytes, str]:
    boundary = "MIMEBoundary_" + uuid.uuid4().hex
    payload = (f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\n"
               f"Content-Transfer-Encoding: binary\r\nContent-ID: <0.root@test>\r\n\r\n").encode() + body + \
        f"\r\n--{boundary}--\r\n".encode()
    ctype = (f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="<0.root@test>"; '
             f'start-info="application/soap+xml"; action="{action}"')
    return payload, ctype


# ---------------------------------------------------------------- metadata

def _slot(name: str, *values: str) -> str:
    return f'<rim:Slot name="{name}"><rim:ValueList>' + "".join(
        f"<rim:Value>{escape(v)}</rim:Value>" for v in values) + "</rim:ValueList></rim:Slot>"


def _code(scheme: str, obj: str, code: str, coding: str, name: str = "x") -> str:
    return (f'<rim:Classification classificationScheme="{scheme}" classifiedObject="{obj}" '
            f'id="{obj}_{uuid.uuid4().hex[:8]}" nodeRepresentation="{code}">{_slot("codingScheme", coding)}'
            f'<rim:Name><rim:LocalizedString value="{name}"/></rim:Name></rim:Classification>')


def _ext(scheme: str, obj: str, value: str, name: str) -> str:
    return (f'<rim:ExternalIdentifier id="{obj}_{uuid.uuid4().hex[:8]}" registryObject="{obj}" '
            f'identificationScheme="{scheme}" value="{escape(value)}"><rim:Name><rim:LocalizedString value="{name}"/>'
            f'</rim:Name></rim:ExternalIdentifier>')


@dataclass
class Doc:
    id: str = "Document01"
    unique_id: str = field(default_factory=new_oid)
    hash: str = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    size: str = "0"
    class_code: tuple = ("REPORTS", "1.3.6.1.4.1.19376.1.2.6.1")
    conf_code: tuple = ("N", "2.16.840.1.113883.5.25")
    event_codes: tuple = ()
    format_code: tuple = ("1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.2.6.1")
    type_code: tuple = ("57055-6", "2.16.840.1.113883.6.1")
    creation_time: str = "20240101120000"
    service_start: str = "20231231080000"
    author: str = "^Welby^Marcus^^^Dr"
    patient: str | None = None
    reference_ids: tuple = ()
    mime_type: str = "text/plain"


def document_entry(d: Doc, patient: str) -> str:
    pid = d.patient or patient
    refs = _slot("urn:ihe:iti:xds:2013:referenceIdList", *d.reference_ids) if d.reference_ids else ""
    return (f'<rim:ExtrinsicObject id="{d.id}" mimeType="{d.mime_type}" '
            f'objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">'
            f'{_slot("creationTime", d.creation_time)}{_slot("languageCode", "en-US")}'
            f'{_slot("serviceStartTime", d.service_start)}'
            f'{_slot("sourcePatientId", "L123^^^&1.2.3.4&ISO")}{_slot("hash", d.hash)}{_slot("size", d.size)}'
            f'{_slot("repositoryUniqueId", "1.3.6.1.4.1.21367.13.40.301")}{refs}'
            f'<rim:Name><rim:LocalizedString value="doc"/></rim:Name>'
            f'<rim:Classification classificationScheme="urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d" '
            f'classifiedObject="{d.id}" id="{d.id}_author" nodeRepresentation="">{_slot("authorPerson", d.author)}'
            f'</rim:Classification>'
            + _code("urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a", d.id, *d.class_code)
            + _code("urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f", d.id, *d.conf_code)
            + "".join(_code("urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4", d.id, *e) for e in d.event_codes)
            + _code("urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d", d.id, *d.format_code)
            + _code("urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1", d.id, "22232009", "2.16.840.1.113883.6.96")
            + _code("urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead", d.id, "225728007", "2.16.840.1.113883.6.96")
            + _code("urn:uuid:f0306f51-975f-434e-a61c-c59651d33983", d.id, *d.type_code)
            + _ext("urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427", d.id, pid, "XDSDocumentEntry.patientId")
            + _ext("urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab", d.id, d.unique_id, "XDSDocumentEntry.uniqueId")
            + "</rim:ExtrinsicObject>")


def association(kind: str, source: str, target: str, ss_status: str | None = None, id: str | None = None) -> str:
    full = {"HasMember": "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"}.get(
        kind, f"urn:ihe:iti:2007:AssociationType:{kind}")
    slot = _slot("SubmissionSetStatus", ss_status) if ss_status else ""
    return (f'<rim:Association id="{id or "a_" + uuid.uuid4().hex[:10]}" associationType="{full}" '
            f'sourceObject="{source}" targetObject="{target}">{slot}</rim:Association>')


def submission(patient: str, docs: list[Doc] = (), folders: list[str] = (), extra: str = "",
               ss_unique_id: str | None = None, ss_patient: str | None = None) -> str:
    ss = "SubmissionSet01"
    parts = [f'<rim:RegistryPackage id="{ss}" '
             f'objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage">'
             f'{_slot("submissionTime", "20240102030405")}<rim:Name><rim:LocalizedString value="ss"/></rim:Name>'
             f'<rim:Classification classificationScheme="urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d" '
             f'classifiedObject="{ss}" id="ss_author" nodeRepresentation="">{_slot("authorPerson", "^Smitty^Gerald")}'
             f'</rim:Classification>'
             + _code("urn:uuid:aa543740-bdda-424e-8c96-df4873be8500", ss, "225728007", "2.16.840.1.113883.6.96")
             + _ext("urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8", ss, ss_unique_id or new_oid(),
                    "XDSSubmissionSet.uniqueId")
             + _ext("urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832", ss, "1.3.6.1.4.1.21367.4",
                    "XDSSubmissionSet.sourceId")
             + _ext("urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446", ss, ss_patient or patient,
                    "XDSSubmissionSet.patientId")
             + "</rim:RegistryPackage>"
             f'<rim:Classification id="ss_class" classifiedObject="{ss}" '
             f'classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"/>']
    for d in docs:
        parts.append(document_entry(d, patient))
        parts.append(association("HasMember", ss, d.id, "Original"))
    for f in folders:
        parts.append(f'<rim:RegistryPackage id="{f}" '
                     f'objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage">'
                     f'<rim:Name><rim:LocalizedString value="folder"/></rim:Name>'
                     + _code("urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5", f, "Referrals",
                             "1.3.6.1.4.1.21367.2017.3")
                     + _ext("urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a", f, patient, "XDSFolder.patientId")
                     + _ext("urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a", f, new_oid(), "XDSFolder.uniqueId")
                     + "</rim:RegistryPackage>"
                     f'<rim:Classification id="{f}_c" classifiedObject="{f}" '
                     f'classificationNode="urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"/>')
        parts.append(association("HasMember", ss, f, "Original"))
    parts.append(extra)
    return (f'<lcm:SubmitObjectsRequest xmlns:lcm="{NS["lcm"]}" xmlns:rim="{NS["rim"]}">'
            f'<rim:RegistryObjectList>{"".join(parts)}</rim:RegistryObjectList></lcm:SubmitObjectsRequest>')


def stored_query(query_id: str, params: dict[str, str | list[str]], return_type: str = "LeafClass") -> str:
    slots = []
    for name, value in params.items():
        for v in (value if isinstance(value, list) else [value]):
            slots.append(_slot(name, v))
    return (f'<query:AdhocQueryRequest xmlns:query="{NS["query"]}" xmlns:rim="{NS["rim"]}">'
            f'<query:ResponseOption returnComposedObjects="true" returnType="{return_type}"/>'
            f'<rim:AdhocQuery id="{query_id}">{"".join(slots)}</rim:AdhocQuery></query:AdhocQueryRequest>')


# ---------------------------------------------------------------- HL7

def adt(event: str, pid3: str, mrg: str | None = None, control_id: str | None = None,
        version: str = "2.3.1") -> bytes:
    structure = {"A40": "ADT_A39"}.get(event, "ADT_A01")
    segments = [f"MSH|^~\\&|TESTER|HOSP|XDSI|HIE|{time.strftime('%Y%m%d%H%M%S')}||ADT^{event}^{structure}|"
                f"{control_id or uuid.uuid4().hex[:16]}|P|{version}",
                f"EVN|{event}|{time.strftime('%Y%m%d%H%M%S')}",
                f"PID|||{pid3}||Doe^Jane||19700101|F"]
    if mrg:
        segments.append(f"MRG|{mrg}")
    else:
        segments.append("PV1||O")
    return "\r".join(segments).encode() + b"\r"


def mllp_send(address: tuple[str, int], message: bytes, timeout: float = 10) -> str:
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(b"\x0b" + message + b"\x1c\x0d")
        data = b""
        while not data.endswith(b"\x1c\x0d"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.strip(b"\x0b\x1c\x0d").decode()


def ack_code(ack: str) -> str:
    msa = next(seg for seg in ack.split("\r") if seg.startswith("MSA"))
    return msa.split("|")[1]


def feed(registry, patient: str) -> None:
    ack = mllp_send(registry.feed, adt("A01", patient))
    assert ack_code(ack) == "AA", ack
