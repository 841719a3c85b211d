"""SOAP 1.2 envelopes with WS-Addressing: read a request, write a response or a fault."""
from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field

from lxml import etree

from .exceptions import XdsiError
from .ns import SOAP11, SOAP12, WSA, WSA_ANONYMOUS, WSA_FAULT_ACTION, WSSE, XML


class SoapFault(XdsiError):
    """A request that is not a well-formed request of any transaction we serve. ``status`` is the
    HTTP status of the answer: by the SOAP 1.2 HTTP binding, 400 for the sender's fault, 500 for ours."""

    def __init__(self, reason: str, code: str = "Sender", subcode: str = "",
                 action: str = WSA_FAULT_ACTION, status: str = "", subcode_ns: tuple[str, str] | None = None):
        super().__init__(reason)
        self.reason, self.code, self.subcode, self.action = reason, code, subcode, action
        self.subcode_ns = subcode_ns    # (prefix, URI) of a qualified subcode, "wsse:InvalidSecurity"
        self.status = status or ("400 Bad Request" if code in ("Sender", "VersionMismatch", "MustUnderstand")
                                 else "500 Internal Server Error")
        self.permanent = self.status.startswith("4")


@dataclass
class Envelope:
    body: etree._Element            # the first element child of soap:Body
    action: str = ""
    message_id: str = ""
    to: str = ""
    reply_to: str = ""
    headers: list[etree._Element] = field(default_factory=list)
    mtom: bool = False              # it came as MTOM/XOP, so it is answered that way
    attachments: dict = field(default_factory=dict)   # content-id -> mtom.Attachment, spooled parts
    # Who the request is served for: the xua.Principal the door found (ITI-40), None when the door
    # checks no assertion. Handlers read it for access decisions and their audit records.
    principal: object = None
    peer: str = ""                  # the requestor's IP address (server side), for its audit record
    # What the handler learned that the exchange's audit record names (audit.xds.record's keywords):
    # "patients" a retrieve was about, "human" (an XUA principal as an audit Human), "description".
    audit: dict = field(default_factory=dict)


def _wsa(headers: list[etree._Element], name: str) -> str:
    for h in headers:
        if h.tag == f"{{{WSA}}}{name}":
            if name == "ReplyTo":
                addr = h.find(f"{{{WSA}}}Address")
                return (addr.text or "").strip() if addr is not None else ""
            return (h.text or "").strip()
    return ""


def read_envelope(root: etree._Element) -> Envelope:
    if root.tag == f"{{{SOAP11}}}Envelope":
        raise SoapFault("SOAP 1.1 is not supported: XDS.b requires SOAP 1.2", code="VersionMismatch")
    if root.tag != f"{{{SOAP12}}}Envelope":
        raise SoapFault("not a SOAP 1.2 Envelope")
    header = root.find(f"{{{SOAP12}}}Header")
    headers = [h for h in header if isinstance(h.tag, str)] if header is not None else []
    for h in headers:
        # wsse:Security is read by xua.check (ITI-40), whatever it holds.
        understood = h.tag.startswith(f"{{{WSA}}}") or h.tag == f"{{{WSSE}}}Security"
        if h.get(f"{{{SOAP12}}}mustUnderstand") in ("true", "1") and not understood:
            raise SoapFault(f"header {h.tag} not understood", code="MustUnderstand")
    body = root.find(f"{{{SOAP12}}}Body")
    content = [c for c in body if isinstance(c.tag, str)] if body is not None else []
    if not content:
        raise SoapFault("SOAP Body is empty")
    return Envelope(body=content[0], action=_wsa(headers, "Action"),
                    message_id=_wsa(headers, "MessageID"), to=_wsa(headers, "To"),
                    reply_to=_wsa(headers, "ReplyTo"), headers=headers)


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def envelope(body: etree._Element | None, action: str, relates_to: str = "",
             to: str = "", message_id: str | None = None, headers: tuple[etree._Element, ...] = ()
             ) -> etree._Element:
    """``headers``: more header blocks after the WS-Addressing ones (a ``wsse:Security``)."""
    env = etree.Element(f"{{{SOAP12}}}Envelope", nsmap={"soapenv": SOAP12, "wsa": WSA})
    header = etree.SubElement(env, f"{{{SOAP12}}}Header")
    act = etree.SubElement(header, f"{{{WSA}}}Action")
    act.text = action
    act.set(f"{{{SOAP12}}}mustUnderstand", "true")
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = message_id or new_message_id()
    if relates_to:
        etree.SubElement(header, f"{{{WSA}}}RelatesTo").text = relates_to
    if to:
        etree.SubElement(header, f"{{{WSA}}}To").text = to
    elif not relates_to:
        reply = etree.SubElement(header, f"{{{WSA}}}ReplyTo")
        etree.SubElement(reply, f"{{{WSA}}}Address").text = WSA_ANONYMOUS
    header.extend(headers)
    b = etree.SubElement(env, f"{{{SOAP12}}}Body")
    if body is not None:
        b.append(body)
    return env


def security_header(assertion: etree._Element) -> etree._Element:
    """A ``wsse:Security`` header (mustUnderstand) carrying a copy of ``assertion`` (ITI-40)."""
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    security.set(f"{{{SOAP12}}}mustUnderstand", "true")
    security.append(copy.deepcopy(assertion))
    return security


def fault_envelope(fault: SoapFault, relates_to: str = "") -> etree._Element:
    f = etree.Element(f"{{{SOAP12}}}Fault")
    code = etree.SubElement(f, f"{{{SOAP12}}}Code")
    etree.SubElement(code, f"{{{SOAP12}}}Value").text = f"soapenv:{fault.code}"
    if fault.subcode:
        sub = etree.SubElement(code, f"{{{SOAP12}}}Subcode")
        value = etree.SubElement(sub, f"{{{SOAP12}}}Value",
                                 nsmap=dict([fault.subcode_ns]) if fault.subcode_ns else None)
        value.text = fault.subcode
    reason = etree.SubElement(f, f"{{{SOAP12}}}Reason")
    text = etree.SubElement(reason, f"{{{SOAP12}}}Text")
    text.set(f"{{{XML}}}lang", "en")
    text.text = fault.reason
    return envelope(f, fault.action, relates_to=relates_to)


def to_bytes(el: etree._Element) -> bytes:
    return etree.tostring(el, xml_declaration=True, encoding="UTF-8")
