"""Test-side ITI-41/ITI-43 client, written from the profile (not from the code under test): builds
ProvideAndRegister requests, MTOM or inline, and reads MTOM answers with the standard library."""
from __future__ import annotations

import base64
import hashlib
import http.client
import urllib.parse
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP

from lxml import etree

from affinity_domain import ns
from tests.xds import NS, Doc, envelope, submission

REPOSITORY_UNIQUE_ID = "1.3.6.1.4.1.21367.13.40.301"
NS = dict(NS, xdsb=ns.XDSB)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def with_hash(doc: Doc, data: bytes) -> Doc:
    doc.hash, doc.size = sha1(data), str(len(data))
    return doc


def provide_body(patient: str, docs: list[tuple[Doc, bytes]], xop: bool = True, extra: str = "",
                 omit_slots: bool = False) -> tuple[str, list[tuple[str, bytes]]]:
    """(ProvideAndRegisterDocumentSetRequest XML, [(content id, bytes)])."""
    metadata = submission(patient, [d for d, _ in docs], extra=extra)
    if omit_slots:   # no hash/size: the repository computes them
        for d, _ in docs:
            metadata = metadata.replace(f'<rim:Slot name="hash"><rim:ValueList><rim:Value>{d.hash}</rim:Value>'
                                        f'</rim:ValueList></rim:Slot>', "", 1)
    parts, documents = [], []
    for d, data in docs:
        if xop:
            cid = f"{uuid.uuid4().hex}@test"
            parts.append((cid, data))
            documents.append(f'<xdsb:Document id="{d.id}">'
                             f'<xop:Include xmlns:xop="{ns.XOP}" '
                             f'href="cid:{urllib.parse.quote(cid)}"/></xdsb:Document>')
        else:
            documents.append(f'<xdsb:Document id="{d.id}">{base64.b64encode(data).decode()}</xdsb:Document>')
    body = f'<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="{ns.XDSB}">{metadata}{"".join(documents)}' \
           f'</xdsb:ProvideAndRegisterDocumentSetRequest>'
    return body, parts


def mtom_message(action: str, body: str, parts: list[tuple[str, bytes]],
                 mime: str = "text/plain") -> tuple[bytes, str]:
    boundary = "MIMEBoundary_" + uuid.uuid4().hex
    out = [(f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: <root@test>\r\n\r\n").encode(), envelope(action, body)]
    for cid, data in parts:
        out += [f"\r\n--{boundary}\r\nContent-Type: {mime}\r\nContent-Transfer-Encoding: binary\r\n"
                f"Content-ID: <{cid}>\r\n\r\n".encode(), data]
    out.append(f"\r\n--{boundary}--\r\n".encode())
    ctype = (f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="<root@test>"; '
             f'start-info="application/soap+xml"; action="{action}"')
    return b"".join(out), ctype


@dataclass
class Answer:
    status: int
    content_type: str
    root: etree._Element | None
    parts: dict[str, tuple[str, bytes]] = field(default_factory=dict)   # cid -> (type, bytes)

    @property
    def payload(self):
        return self.root.find("s:Body", NS)[0]

    @property
    def registry_response(self):
        p = self.payload
        return p if p.tag.endswith("RegistryResponse") else p.find("rs:RegistryResponse", NS)

    @property
    def status_name(self) -> str:
        return self.registry_response.get("status", "").rsplit(":", 1)[-1]

    @property
    def error_codes(self) -> list[str]:
        return [e.get("errorCode") for e in self.registry_response.iterfind(".//rs:RegistryError", NS)]

    def documents(self) -> dict[str, tuple[str, bytes]]:
        """uniqueId -> (mimeType, bytes) of an ITI-43 answer."""
        out = {}
        for r in self.payload.iterfind("xdsb:DocumentResponse", NS):
            inc = r.find(f"xdsb:Document/{{{ns.XOP}}}Include", NS)
            cid = urllib.parse.unquote(inc.get("href")[4:])
            out[r.findtext("xdsb:DocumentUniqueId", namespaces=NS)] = (r.findtext("xdsb:mimeType", namespaces=NS),
                                                                       self.parts[cid][1])
        return out


def post(url: str, body: bytes, content_type: str, timeout: float = 120) -> Answer:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", u.path, body=body, headers={"Content-Type": content_type})
        r = conn.getresponse()
        data, ctype = r.read(), r.getheader("Content-Type", "")
    finally:
        conn.close()
    parts = {}
    xml = data
    if ctype.startswith("multipart/"):
        msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + data)
        mime = list(msg.iter_parts())
        xml = mime[0].get_payload(decode=True)
        for p in mime[1:]:
            parts[p["Content-ID"].strip("<>")] = (p.get_content_type(), p.get_payload(decode=True))
    return Answer(r.status, ctype, etree.fromstring(xml) if xml.strip() else None, parts)


def provide(url: str, patient: str, docs: list[tuple[Doc, bytes]], xop: bool = True, **kw) -> Answer:
    body, parts = provide_body(patient, docs, xop=xop, **kw)
    if xop:
        return post(url, *mtom_message(ns.PROVIDE_AND_REGISTER, body, parts))
    return post(url, envelope(ns.PROVIDE_AND_REGISTER, body), "application/soap+xml; charset=UTF-8")


def retrieve_body(requests: list[tuple[str, str]], home: str = "") -> str:
    home_el = f"<xdsb:HomeCommunityId>{home}</xdsb:HomeCommunityId>" if home else ""
    return (f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{ns.XDSB}">' + "".join(
        f"<xdsb:DocumentRequest>{home_el}<xdsb:RepositoryUniqueId>{r}</xdsb:RepositoryUniqueId>"
        f"<xdsb:DocumentUniqueId>{d}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>" for r, d in requests)
        + "</xdsb:RetrieveDocumentSetRequest>")


def retrieve(url: str, requests: list[tuple[str, str]], home: str = "", mtom: bool = True) -> Answer:
    body = retrieve_body(requests, home)
    if mtom:
        return post(url, *mtom_message(ns.RETRIEVE, body, []))
    return post(url, envelope(ns.RETRIEVE, body), "application/soap+xml; charset=UTF-8")
