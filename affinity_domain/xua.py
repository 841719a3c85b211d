"""XUA (ITI-40) as an X-Service Provider: the SAML 2.0 assertion in a request's ``wsse:Security``
header, checked, becomes the ``Principal`` the request is served and audited for; or an
``XuaFault``, the WS-Security SOAP fault to answer instead. Sans-IO: element in, value out.

What is checked, each time an assertion is present (whatever the mode but ``off``):
exactly one assertion, SAML 2.0; its enveloped XML signature (signxml) by one of
``[xua] trusted_issuers``, and what the signature covers IS that assertion (the values are read
from the signed data the library returns, never from the message around it: signature wrapping);
Conditions NotBefore / NotOnOrAfter within ``clock_skew_seconds``; an AudienceRestriction naming
``[xua] audience``; a NameID and a bearer SubjectConfirmation still valid.
"""
from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier
from signxml.exceptions import SignXMLException

from . import ns
from .config import Config, ConfigError, Natural, build_overlaid
from .soap import SoapFault, fault_envelope as soap_fault_envelope

_SAML = f"{{{ns.SAML2}}}"
_SECURITY = f"{{{ns.WSSE}}}Security"
_HEADER = f"{{{ns.SOAP12}}}Header"
_TARGETED_AT_US = {None, "http://www.w3.org/2003/05/soap-envelope/role/next",
                   "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver"}


@dataclass(frozen=True)
class XuaSettings:
    """``[xua]``, with an actor's ``[ACTOR.xua]`` over it (``xua_settings``)."""

    SECTION: ClassVar[str] = "xua"
    mode: Literal["off", "optional", "required"]
    trusted_issuers: tuple[str, ...]
    audience: str
    clock_skew_seconds: Natural
    certificates: tuple[x509.Certificate, ...] = field(init=False, default=(), repr=False, compare=False)

    def __post_init__(self):
        certificates = []
        for path in self.trusted_issuers:
            try:
                with open(path, "rb") as f:
                    certificates += x509.load_pem_x509_certificates(f.read())
            except (OSError, ValueError) as e:
                raise ConfigError(f"[xua] trusted_issuers: {path!r}: {e}") from None
        object.__setattr__(self, "certificates", tuple(certificates))
        if self.mode == "required" and not certificates:
            raise ConfigError('[xua] mode = "required" needs [xua] trusted_issuers (else every request fails)')
        if certificates and not self.audience:
            raise ConfigError("[xua] audience: required with trusted_issuers (assertions are checked against it)")


def xua_settings(config: Config, actor: str) -> XuaSettings:
    return build_overlaid(XuaSettings, config, actor)


@dataclass(frozen=True)
class Code:
    """An HL7 v3 CE, as XUA carries roles and purposes of use."""

    code: str
    code_system: str = ""
    display_name: str = ""


@dataclass(frozen=True)
class Principal:
    """Who a request is served for. An empty ``assertion_id``: anonymous (no assertion)."""

    subject: str = ""                   # saml:Subject/saml:NameID
    subject_name: str = ""              # XSPA subject-id: the user's name, in plain text
    organization: str = ""
    organization_id: str = ""
    home_community_id: str = ""
    npi: str = ""
    roles: tuple[Code, ...] = ()
    purpose_of_use: tuple[Code, ...] = ()
    patient_id: str = ""                # XACML resource-id
    issuer: str = ""                    # saml:Issuer
    assertion_id: str = ""

    @property
    def anonymous(self) -> bool:
        return not self.assertion_id


ANONYMOUS = Principal()


@dataclass(frozen=True)
class XuaFault:
    """A failed check: ``code`` is the WS-Security fault (``ns.WSSE_INVALID_SECURITY``: the header
    itself is wrong; ``ns.WSSE_FAILED_AUTHENTICATION``: the assertion cannot be trusted)."""

    code: str
    reason: str


def _invalid(reason: str) -> XuaFault:
    return XuaFault(ns.WSSE_INVALID_SECURITY, reason)


def _failed(reason: str) -> XuaFault:
    return XuaFault(ns.WSSE_FAILED_AUTHENTICATION, reason)


def _headers(header: etree._Element | Iterable[etree._Element] | None) -> list[etree._Element]:
    if header is None:
        return []
    children = list(header) if isinstance(header, etree._Element) and header.tag == _HEADER else \
        [header] if isinstance(header, etree._Element) else list(header)
    return [h for h in children if isinstance(h.tag, str)]


def check(header: etree._Element | Iterable[etree._Element] | None, settings: XuaSettings,
          now: datetime.datetime | None = None) -> Principal | XuaFault:
    """The principal of a request, from its ``soap:Header`` (or its header elements, as
    ``soap.Envelope.headers`` has them)."""
    if settings.mode == "off":
        return ANONYMOUS
    securities = [h for h in _headers(header) if h.tag == _SECURITY
                  and h.get(f"{{{ns.SOAP12}}}role") in _TARGETED_AT_US]
    if len(securities) > 1:
        return _invalid("more than one wsse:Security header for this node")
    assertions = list(securities[0].iter(f"{_SAML}Assertion")) if securities else []
    if securities and next(securities[0].iter(f"{_SAML}EncryptedAssertion"), None) is not None:
        return _invalid("encrypted assertions are not accepted")
    if not assertions:
        return _invalid("a SAML assertion is required ([xua] mode = required)") \
            if settings.mode == "required" else ANONYMOUS
    if len(assertions) > 1:
        return _invalid("more than one SAML assertion in wsse:Security")
    return _check_assertion(assertions[0], settings, now or datetime.datetime.now(datetime.timezone.utc))


def _check_assertion(assertion: etree._Element, settings: XuaSettings,
                     now: datetime.datetime) -> Principal | XuaFault:
    if assertion.get("Version") != "2.0" or not assertion.get("ID"):
        return _invalid("not a SAML 2.0 assertion (Version 2.0 and an ID)")
    if not settings.certificates:
        return _failed("no X-Assertion Provider is trusted here ([xua] trusted_issuers is empty)")
    signed = _verified_once(assertion, settings.certificates)
    if isinstance(signed, XuaFault):
        return signed
    # From here on, only what the signature covers is read.
    return _conditions(signed, settings, now) or _subject(signed, now, settings.clock_skew_seconds) or \
        _principal(signed)


# A client sends one assertion with every request of its session: the verdict of its signature is
# kept for the very same bytes (the serialized element the signature was checked over) and the
# same trusted issuers. Validity, audience and subject are still checked on each request.
_VERIFIED: OrderedDict[tuple, etree._Element] = OrderedDict()
_VERIFIED_MAX = 1024
_verified_lock = threading.Lock()


def _verified_once(assertion: etree._Element, trusted: tuple[x509.Certificate, ...]) -> etree._Element | XuaFault:
    key = (trusted, hashlib.sha256(etree.tostring(copy.deepcopy(assertion))).digest())
    with _verified_lock:
        signed = _VERIFIED.get(key)
        if signed is not None:
            _VERIFIED.move_to_end(key)
            return signed
    signed = _verified(assertion, trusted)
    if not isinstance(signed, XuaFault):
        with _verified_lock:
            _VERIFIED[key] = signed
            while len(_VERIFIED) > _VERIFIED_MAX:
                _VERIFIED.popitem(last=False)
    return signed


def _verified(assertion: etree._Element, trusted: tuple[x509.Certificate, ...]) -> etree._Element | XuaFault:
    """The assertion as signed, or why it is not trusted."""
    signature = assertion.find(f"{{{ns.DS}}}Signature")
    if signature is None:
        return _failed("the assertion is not signed")
    candidates = _signers(signature, trusted)
    if not candidates:
        return _failed("the assertion is signed with a certificate that is not a trusted issuer's")
    # Alone, the assertion can only reference itself: nothing else of the message can be what is signed.
    alone = copy.deepcopy(assertion)
    config = SignatureConfiguration(location="./", expect_references=1)
    reason = ""
    for cert in candidates:
        try:
            result = XMLVerifier().verify(alone, x509_cert=cert, expect_config=config)
        except (SignXMLException, ValueError, etree.LxmlError) as e:
            reason = str(e).rstrip(": ") or type(e).__name__
            continue
        signed = result.signed_xml
        if signed is None or signed.tag != f"{_SAML}Assertion" or signed.get("ID") != assertion.get("ID"):
            return _failed("the signature does not cover the assertion")
        return signed
    return _failed(f"the assertion's signature does not verify: {reason}")


def _signers(signature: etree._Element, trusted: tuple[x509.Certificate, ...]) -> list[x509.Certificate]:
    """The trusted certificates to try: the one the signature names in KeyInfo (if it is trusted),
    else all of them."""
    sent = [t.text for t in signature.iter(f"{{{ns.DS}}}X509Certificate") if t.text]
    if not sent:
        return list(trusted)
    der = {c.public_bytes(serialization.Encoding.DER): c for c in trusted}
    found = []
    for text in sent:
        try:
            cert = x509.load_der_x509_certificate(_b64(text))
        except ValueError:
            continue
        match = der.get(cert.public_bytes(serialization.Encoding.DER))
        if match is not None:
            found.append(match)
    return found


def _b64(text: str) -> bytes:
    return base64.b64decode("".join(text.split()), validate=True)


def _instant(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:     # xs:dateTime may carry more fractional digits than datetime reads
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _window(element: etree._Element, now: datetime.datetime, skew: datetime.timedelta, what: str,
            need_end: bool) -> XuaFault | None:
    not_before, not_after = element.get("NotBefore"), element.get("NotOnOrAfter")
    start, end = _instant(not_before), _instant(not_after)
    if (not_before and start is None) or (not_after and end is None):
        return _invalid(f"{what}: a NotBefore or NotOnOrAfter that is not an xs:dateTime")
    if need_end and end is None:
        return _failed(f"{what} has no NotOnOrAfter: an assertion must expire")
    if start is not None and now + skew < start:
        return _failed(f"{what} is not yet valid (NotBefore {not_before})")
    if end is not None and now - skew >= end:
        return _failed(f"{what} has expired (NotOnOrAfter {not_after})")
    return None


def _conditions(assertion: etree._Element, settings: XuaSettings, now: datetime.datetime) -> XuaFault | None:
    skew = datetime.timedelta(seconds=settings.clock_skew_seconds)
    issued = _instant(assertion.get("IssueInstant"))
    if issued is None:
        return _invalid("the assertion has no IssueInstant that is an xs:dateTime")
    if issued > now + skew:
        return _failed(f"the assertion is issued in the future (IssueInstant {assertion.get('IssueInstant')})")
    conditions = assertion.find(f"{_SAML}Conditions")
    if conditions is None:
        return _failed("the assertion has no Conditions (validity and audience)")
    fault = _window(conditions, now, skew, "the assertion", need_end=True)
    if fault:
        return fault
    restrictions = conditions.findall(f"{_SAML}AudienceRestriction")
    if not restrictions:
        return _failed("the assertion has no AudienceRestriction")
    for restriction in restrictions:     # several restrictions all apply (SAML core 2.5.1.4)
        if settings.audience not in {(a.text or "").strip() for a in restriction.findall(f"{_SAML}Audience")}:
            return _failed(f"the assertion is not meant for this audience ({settings.audience})")
    return None


def _subject(assertion: etree._Element, now: datetime.datetime, skew_seconds: int) -> XuaFault | None:
    subject = assertion.find(f"{_SAML}Subject")
    name_id = subject.find(f"{_SAML}NameID") if subject is not None else None
    if name_id is None or not (name_id.text or "").strip():
        return _failed("the assertion has no Subject NameID")
    skew = datetime.timedelta(seconds=skew_seconds)
    faults = []
    for confirmation in subject.findall(f"{_SAML}SubjectConfirmation"):
        if confirmation.get("Method") != ns.SAML2_BEARER:
            continue
        data = confirmation.find(f"{_SAML}SubjectConfirmationData")
        fault = _window(data, now, skew, "the bearer confirmation", need_end=False) if data is not None else None
        if fault is None:
            return None
        faults.append(fault)
    return faults[0] if faults else _failed("the assertion has no bearer SubjectConfirmation")


def _codes(values: list[etree._Element]) -> tuple[Code, ...]:
    codes = []
    for value in values:
        ce = next((c for c in value if isinstance(c.tag, str)), None)
        if ce is not None and ce.get("code"):
            codes.append(Code(ce.get("code"), ce.get("codeSystem", ""), ce.get("displayName", "")))
        elif (value.text or "").strip():
            codes.append(Code((value.text or "").strip()))
    return tuple(codes)


def _principal(assertion: etree._Element) -> Principal:
    attributes: dict[str, list[etree._Element]] = {}
    for statement in assertion.findall(f"{_SAML}AttributeStatement"):
        for attribute in statement.findall(f"{_SAML}Attribute"):
            attributes.setdefault(attribute.get("Name", ""), []).extend(
                attribute.findall(f"{_SAML}AttributeValue"))

    def text(name: str) -> str:
        return next(((v.text or "").strip() for v in attributes.get(name, []) if (v.text or "").strip()), "")

    issuer = assertion.find(f"{_SAML}Issuer")
    return Principal(subject=(assertion.find(f"{_SAML}Subject/{_SAML}NameID").text or "").strip(),
                     subject_name=text(ns.XUA_SUBJECT_ID), organization=text(ns.XUA_ORGANIZATION),
                     organization_id=text(ns.XUA_ORGANIZATION_ID), home_community_id=text(ns.XUA_HOME_COMMUNITY_ID),
                     npi=text(ns.XUA_NPI), roles=_codes(attributes.get(ns.XUA_ROLE, [])),
                     purpose_of_use=_codes(attributes.get(ns.XUA_PURPOSE_OF_USE, [])),
                     patient_id=text(ns.XUA_RESOURCE_ID),
                     issuer=(issuer.text or "").strip() if issuer is not None else "",
                     assertion_id=assertion.get("ID", ""))


# ------------------------------------------------------------ the answer to a failed check

def soap_fault(fault: XuaFault) -> SoapFault:
    """The SOAP 1.2 Sender fault whose Subcode is the WS-Security fault code."""
    return SoapFault(fault.reason, code="Sender", subcode=f"wsse:{fault.code}", subcode_ns=("wsse", ns.WSSE))


def fault_envelope(fault: XuaFault, relates_to: str = "") -> etree._Element:
    return soap_fault_envelope(soap_fault(fault), relates_to=relates_to)
