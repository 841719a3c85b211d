"""A test X-Assertion Provider (ITI-40): a key and self-signed certificate made with
``cryptography``, and SAML 2.0 assertions signed with signxml as an outside IdP would sign them
(or forged: unsigned, expired, for another audience, by another key). Shared by the XUA unit
tests and the wire tests of the SOAP doors."""
from __future__ import annotations

import datetime
import functools
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner, methods

from affinity_domain import ns

AUDIENCE = "urn:oid:1.3.6.1.4.1.21367.13.70.200"
NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
PATIENT = "IHERED-1024^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"


@dataclass
class Idp:
    key_pem: bytes
    cert_pem: bytes
    cert_path: Path


def make_idp(directory: Path, name: str) -> Idp:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    path = directory / f"{name}.pem"
    path.write_bytes(cert_pem)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Idp(key_pem, cert_pem, path)


def _at_(seconds: int, now: datetime.datetime | None = None) -> str:
    return ((now or NOW) + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sub(parent, name: str, text: str | None = None, **attributes) -> etree._Element:
    el = etree.SubElement(parent, f"{{{ns.SAML2}}}{name}", **attributes)
    el.text = text
    return el


def _attribute(statement, name: str, value: str | None = None, ce: tuple[str, str, str, str] | None = None):
    attribute = _sub(statement, "Attribute", Name=name, NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:uri")
    value_el = _sub(attribute, "AttributeValue", value)
    if ce:
        tag, code, system, display = ce
        el = etree.SubElement(value_el, f"{{{ns.HL7V3}}}{tag}", code=code, codeSystem=system, displayName=display)
        el.set(f"{{{ns.XSI}}}type", "CE")


class Sha1Signer(XMLSigner):
    """An IdP still on SHA-1 (signxml refuses to make such signatures unless told)."""

    def check_deprecated_methods(self):
        pass


def assertion(signer: Idp | None, *, not_before: int = -300, not_on_or_after: int = 300, issued: int = -10,
              audience: str = AUDIENCE, method: str = ns.SAML2_BEARER, name_id: str = "dr.house@hospital-a.example",
              algorithm: str = "rsa-sha256", key_info: Idp | None = None, now: datetime.datetime | None = None,
              roles: tuple[tuple[str, str, str], ...] = (("309343006", "2.16.840.1.113883.6.96", "Physician"),),
              purpose: tuple[str, str, str] = ("TREATMENT", "2.16.840.1.113883.3.18.7.1", "Treatment"),
              ) -> etree._Element:
    """A XUA assertion as an X-Assertion Provider issues it; signed by ``signer`` unless None. Its
    times are relative to ``now`` (default: ``NOW``, this module's import)."""
    _at = functools.partial(_at_, now=now)
    a = etree.Element(f"{{{ns.SAML2}}}Assertion", nsmap={"saml": ns.SAML2, "xsi": ns.XSI, "hl7": ns.HL7V3},
                      ID=f"_{uuid.uuid4()}", Version="2.0", IssueInstant=_at(issued))
    _sub(a, "Issuer", "https://idp.hospital-a.example", Format="urn:oasis:names:tc:SAML:2.0:nameid-format:entity")
    if signer:
        etree.SubElement(a, f"{{{ns.DS}}}Signature", Id="placeholder", nsmap={"ds": ns.DS})
    subject = _sub(a, "Subject")
    _sub(subject, "NameID", name_id, Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress")
    confirmation = _sub(subject, "SubjectConfirmation", Method=method)
    _sub(confirmation, "SubjectConfirmationData", NotOnOrAfter=_at(not_on_or_after))
    conditions = _sub(a, "Conditions", NotBefore=_at(not_before), NotOnOrAfter=_at(not_on_or_after))
    _sub(_sub(conditions, "AudienceRestriction"), "Audience", audience)
    authn = _sub(a, "AuthnStatement", AuthnInstant=_at(issued))
    _sub(_sub(authn, "AuthnContext"), "AuthnContextClassRef",
         "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport")
    statement = _sub(a, "AttributeStatement")
    _attribute(statement, ns.XUA_SUBJECT_ID, "Gregory House")
    _attribute(statement, ns.XUA_ORGANIZATION, "Hospital A")
    _attribute(statement, ns.XUA_ORGANIZATION_ID, "urn:oid:1.3.6.1.4.1.21367.2005.13.20.3000")
    _attribute(statement, ns.XUA_HOME_COMMUNITY_ID, "urn:oid:1.3.6.1.4.1.21367.13.70.101")
    for role in roles:
        _attribute(statement, ns.XUA_ROLE, ce=("Role", *role))
    _attribute(statement, ns.XUA_PURPOSE_OF_USE, ce=("PurposeOfUse", *purpose))
    _attribute(statement, ns.XUA_RESOURCE_ID, PATIENT)
    if not signer:
        return a
    cert = (key_info or signer).cert_pem.decode()
    sha1 = algorithm.endswith("sha1")
    return (Sha1Signer if sha1 else XMLSigner)(method=methods.enveloped, signature_algorithm=algorithm,
                                               digest_algorithm="sha1" if sha1 else "sha256",
                                               c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#").sign(
        a, key=signer.key_pem, cert=cert, reference_uri=a.get("ID"))


def security_header(signed: etree._Element) -> str:
    """The ``wsse:Security`` header (``mustUnderstand="1"``) carrying ``signed``, as text."""
    return (f'<wsse:Security xmlns:wsse="{ns.WSSE}" xmlns:s="{ns.SOAP12}" s:mustUnderstand="1">'
            f'{etree.tostring(signed).decode()}</wsse:Security>')
