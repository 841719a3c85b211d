"""XUA (ITI-40) checks of the X-Service Provider. A test IdP (key and certificate made here with
``cryptography``, tests/xua_idp.py) signs assertions with signxml, as an outside X-Assertion Provider would; each
request is a raw SOAP 1.2 envelope (``wsse:Security`` with ``mustUnderstand="1"``) read by
``xmlsafe.parse`` and ``soap.read_envelope`` as a door reads it, then ``xua.check``."""
from __future__ import annotations

import copy
import datetime
import uuid

import pytest
from lxml import etree
from signxml import XMLSigner, methods

from affinity_domain import ns, soap, xmlsafe, xua
from affinity_domain.config import ConfigError, load
from tests.xua_idp import AUDIENCE, NOW, PATIENT, Idp, _attribute, assertion, make_idp


@pytest.fixture(scope="module")
def idp(tmp_path_factory) -> Idp:
    return make_idp(tmp_path_factory.mktemp("idp"), "test-idp")


@pytest.fixture(scope="module")
def evil(tmp_path_factory) -> Idp:
    return make_idp(tmp_path_factory.mktemp("evil"), "evil")


def xua_settings(idp: Idp | None, mode: str = "optional", skew: int = 60) -> xua.XuaSettings:
    return xua.XuaSettings(mode=mode, trusted_issuers=(str(idp.cert_path),) if idp else (), audience=AUDIENCE,
                           clock_skew_seconds=skew)


def request(*in_security: etree._Element, elsewhere: etree._Element | None = None,
            must_understand: str = "1") -> soap.Envelope:
    """An ITI-18 request as it comes off the wire, read as the SOAP door reads it."""
    security = "".join(etree.tostring(el).decode() for el in in_security)
    body_extra = etree.tostring(elsewhere).decode() if elsewhere is not None else ""
    raw = f"""<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="{ns.SOAP12}" xmlns:a="{ns.WSA}" xmlns:wsse="{ns.WSSE}">
  <s:Header>
    <a:Action s:mustUnderstand="1">{ns.STORED_QUERY}</a:Action>
    <a:MessageID>urn:uuid:{uuid.uuid4()}</a:MessageID>
    <wsse:Security s:mustUnderstand="{must_understand}">{security}</wsse:Security>
  </s:Header>
  <s:Body><query:AdhocQueryRequest xmlns:query="{ns.QUERY}"/>{body_extra}</s:Body>
</s:Envelope>""".encode()
    return soap.read_envelope(xmlsafe.parse(raw))


def check(envelope: soap.Envelope, settings: xua.XuaSettings) -> xua.Principal | xua.XuaFault:
    return xua.check(envelope.headers, settings, now=NOW)


def failed(result, code: str, words: str) -> bool:
    return isinstance(result, xua.XuaFault) and result.code == code and words in result.reason


# ------------------------------------------------------------ the good assertion

def test_a_signed_assertion_of_a_trusted_issuer_gives_its_principal(idp):
    got = check(request(assertion(idp)), xua_settings(idp))
    assert isinstance(got, xua.Principal) and not got.anonymous
    assert (got.subject, got.subject_name, got.organization) == ("dr.house@hospital-a.example", "Gregory House",
                                                                 "Hospital A")
    assert got.organization_id == "urn:oid:1.3.6.1.4.1.21367.2005.13.20.3000"
    assert got.home_community_id == "urn:oid:1.3.6.1.4.1.21367.13.70.101"
    assert got.roles == (xua.Code("309343006", "2.16.840.1.113883.6.96", "Physician"),)
    assert got.purpose_of_use == (xua.Code("TREATMENT", "2.16.840.1.113883.3.18.7.1", "Treatment"),)
    assert got.patient_id == PATIENT and got.issuer == "https://idp.hospital-a.example"
    assert got.assertion_id.startswith("_")


def test_must_understand_on_wsse_security_is_understood(idp):
    # Before: soap.read_envelope answered a MustUnderstand fault, so real XUA peers failed.
    for flag in ("1", "true"):
        envelope = request(assertion(idp), must_understand=flag)
        assert envelope.action == ns.STORED_QUERY
        assert isinstance(check(envelope, xua_settings(idp)), xua.Principal)


def test_the_clock_skew_is_allowed_on_both_ends(idp):
    late = request(assertion(idp, not_before=-600, not_on_or_after=-30))
    early = request(assertion(idp, not_before=30))
    for envelope, words in ((late, "expired"), (early, "not yet valid")):
        assert isinstance(check(envelope, xua_settings(idp, skew=60)), xua.Principal)
        assert failed(check(envelope, xua_settings(idp, skew=0)), ns.WSSE_FAILED_AUTHENTICATION, words)


# ------------------------------------------------------------ modes

def test_without_an_assertion_optional_serves_anonymously_and_required_refuses(idp):
    bare = request()
    assert check(bare, xua_settings(idp)) is xua.ANONYMOUS and xua.ANONYMOUS.anonymous
    assert xua.check(None, xua_settings(idp)) is xua.ANONYMOUS
    assert failed(check(bare, xua_settings(idp, mode="required")), ns.WSSE_INVALID_SECURITY, "required")


def test_off_reads_nothing(idp):
    assert check(request(assertion(None)), xua_settings(idp, mode="off")) is xua.ANONYMOUS


def test_with_no_trusted_issuer_every_assertion_fails(idp):
    got = check(request(assertion(idp)), xua_settings(None))
    assert failed(got, ns.WSSE_FAILED_AUTHENTICATION, "trusted_issuers")


# ------------------------------------------------------------ forged assertions

@pytest.mark.parametrize("case, forge, code, words", [
    ("unsigned", lambda idp, evil: assertion(None), ns.WSSE_FAILED_AUTHENTICATION, "not signed"),
    ("expired", lambda idp, evil: assertion(idp, not_before=-7200, not_on_or_after=-3600),
     ns.WSSE_FAILED_AUTHENTICATION, "expired"),
    ("not yet valid", lambda idp, evil: assertion(idp, not_before=3600, not_on_or_after=7200),
     ns.WSSE_FAILED_AUTHENTICATION, "not yet valid"),
    ("issued in the future", lambda idp, evil: assertion(idp, issued=3600),
     ns.WSSE_FAILED_AUTHENTICATION, "future"),
    ("wrong audience", lambda idp, evil: assertion(idp, audience="urn:oid:9.9.9"),
     ns.WSSE_FAILED_AUTHENTICATION, "audience"),
    ("not bearer", lambda idp, evil: assertion(idp, method="urn:oasis:names:tc:SAML:2.0:cm:holder-of-key"),
     ns.WSSE_FAILED_AUTHENTICATION, "bearer"),
    ("untrusted issuer", lambda idp, evil: assertion(evil), ns.WSSE_FAILED_AUTHENTICATION, "not a trusted"),
    ("untrusted key, trusted certificate in KeyInfo", lambda idp, evil: assertion(evil, key_info=idp),
     ns.WSSE_FAILED_AUTHENTICATION, "does not verify"),
    ("SHA-1", lambda idp, evil: assertion(idp, algorithm="rsa-sha1"), ns.WSSE_FAILED_AUTHENTICATION,
     "does not verify"),
])
def test_a_forged_assertion_fails(idp, evil, case, forge, code, words):
    got = check(request(forge(idp, evil)), xua_settings(idp))
    assert failed(got, code, words), (case, got)


def test_a_name_id_changed_after_signing_fails(idp):
    signed = assertion(idp)
    signed.find(f"{{{ns.SAML2}}}Subject/{{{ns.SAML2}}}NameID").text = "admin@hospital-a.example"
    got = check(request(signed), xua_settings(idp))
    assert failed(got, ns.WSSE_FAILED_AUTHENTICATION, "does not verify"), got


def test_an_attribute_added_after_signing_fails(idp):
    signed = assertion(idp)
    _attribute(signed.find(f"{{{ns.SAML2}}}AttributeStatement"), ns.XUA_ROLE,
               ce=("Role", "ADMIN", "2.16.840.1.113883.6.96", "Administrator"))
    assert failed(check(request(signed), xua_settings(idp)), ns.WSSE_FAILED_AUTHENTICATION, "does not verify")


def _forged_copy(signed: etree._Element, subject: str, keep_id: bool) -> etree._Element:
    """An unsigned assertion of the attacker's, carrying a copy of the real one's signature."""
    forged = copy.deepcopy(signed)
    forged.find(f"{{{ns.SAML2}}}Subject/{{{ns.SAML2}}}NameID").text = subject
    if not keep_id:
        forged.set("ID", f"_{uuid.uuid4()}")
    return forged


def test_signature_wrapping_a_second_unsigned_assertion_fails(idp):
    signed = assertion(idp)
    unsigned = assertion(None, name_id="admin@hospital-a.example")
    for order in ((unsigned, signed), (signed, unsigned)):
        got = check(request(*order), xua_settings(idp))
        assert failed(got, ns.WSSE_INVALID_SECURITY, "more than one"), got


def test_signature_wrapping_the_signed_assertion_moved_out_of_the_header_fails(idp):
    signed = assertion(idp)
    # The attacker's assertion (new ID, the real signature copied in, whose Reference names the
    # real assertion's ID) sits in wsse:Security; the real one is moved into the Body.
    forged = _forged_copy(signed, "admin@hospital-a.example", keep_id=False)
    got = check(request(forged, elsewhere=signed), xua_settings(idp))
    assert failed(got, ns.WSSE_FAILED_AUTHENTICATION, "does not verify"), got
    # the same with the real one's ID kept, so that the Reference resolves to the forged one
    forged = _forged_copy(signed, "admin@hospital-a.example", keep_id=True)
    got = check(request(forged, elsewhere=signed), xua_settings(idp))
    assert failed(got, ns.WSSE_FAILED_AUTHENTICATION, "does not verify"), got


def test_signature_wrapping_inside_advice_fails(idp):
    signed = assertion(idp)
    forged = _forged_copy(signed, "admin@hospital-a.example", keep_id=False)
    advice = etree.Element(f"{{{ns.SAML2}}}Advice")
    advice.append(copy.deepcopy(signed))
    forged.find(f"{{{ns.SAML2}}}Conditions").addnext(advice)
    got = check(request(forged), xua_settings(idp))
    assert failed(got, ns.WSSE_INVALID_SECURITY, "more than one"), got


def test_a_signature_over_another_element_is_not_a_signature_of_the_assertion(idp):
    # The assertion is signed, but its Reference points at its Subject, not at the assertion:
    # the Subject is genuine, the rest (audience, validity, attributes) could be anything.
    a = assertion(None)
    subject = a.find(f"{{{ns.SAML2}}}Subject")
    subject.set("ID", "_subject")
    a.find(f"{{{ns.SAML2}}}Issuer").addnext(etree.Element(f"{{{ns.DS}}}Signature", Id="placeholder",
                                                          nsmap={"ds": ns.DS}))
    signed = XMLSigner(method=methods.enveloped, signature_algorithm="rsa-sha256", digest_algorithm="sha256",
                       c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#").sign(
        a, key=idp.key_pem, cert=idp.cert_pem.decode(), reference_uri="_subject")
    got = check(request(signed), xua_settings(idp))
    assert failed(got, ns.WSSE_FAILED_AUTHENTICATION, "does not cover the assertion"), got


def test_an_assertion_without_a_version_or_expiry_fails(idp):
    a = assertion(idp)
    a.attrib.pop("Version")
    assert failed(check(request(a), xua_settings(idp)), ns.WSSE_INVALID_SECURITY, "SAML 2.0")


# ------------------------------------------------------------ the fault

def test_the_fault_is_a_soap12_sender_fault_with_the_wsse_subcode():
    fault = xua.XuaFault(ns.WSSE_FAILED_AUTHENTICATION, "the assertion has expired")
    envelope = xua.fault_envelope(fault, relates_to="urn:uuid:1234")
    wire = soap.to_bytes(envelope)
    back = xmlsafe.parse(wire)
    q = {"s": ns.SOAP12, "a": ns.WSA}
    assert back.findtext("s:Body/s:Fault/s:Code/s:Value", namespaces=q) == "soapenv:Sender"
    value = back.find("s:Body/s:Fault/s:Code/s:Subcode/s:Value", namespaces=q)
    prefix, local = value.text.split(":")
    assert (value.nsmap[prefix], local) == (ns.WSSE, "FailedAuthentication")   # a QName that resolves
    assert back.findtext("s:Body/s:Fault/s:Reason/s:Text", namespaces=q) == "the assertion has expired"
    assert back.findtext("s:Header/a:Action", namespaces=q) == ns.WSA_FAULT_ACTION
    assert back.findtext("s:Header/a:RelatesTo", namespaces=q) == "urn:uuid:1234"
    assert xua.soap_fault(fault).status == "400 Bad Request"


# ------------------------------------------------------------ settings

def test_xua_settings_default_and_per_actor(idp, tmp_path):
    s = xua.xua_settings(load(environ={}), "registry")
    assert (s.mode, s.trusted_issuers, s.certificates) == ("optional", (), ())
    path = tmp_path / "xdsi.toml"
    path.write_text(f'[xua]\ntrusted_issuers = ["{idp.cert_path}"]\naudience = "{AUDIENCE}"\n'
                    f'[repository.xua]\naudience = "urn:oid:1.2.3"\nmode = "required"\n')
    cfg = load(path, environ={"XDSI_REGISTRY_XUA_CLOCK_SKEW_SECONDS": "5"})
    registry, repository = xua.xua_settings(cfg, "registry"), xua.xua_settings(cfg, "repository")
    assert registry.audience == AUDIENCE and repository.audience == "urn:oid:1.2.3"
    assert (registry.mode, repository.mode) == ("optional", "required")
    assert (registry.clock_skew_seconds, repository.clock_skew_seconds) == (5, 60)
    assert len(registry.certificates) == 1


@pytest.mark.parametrize("text, message", [
    ('[xua]\nmode = "required"\n', "needs [xua] trusted_issuers"),
    ('[xua]\nmode = "strict"\n', "[xua] mode = 'strict': use one of off, optional, required"),
    ('[xua]\ntrusted_issuers = ["{pem}"]\n', "[xua] audience: required"),
    ('[xua]\ntrusted_issuers = ["/nonexistent.pem"]\naudience = "x"\n', "/nonexistent.pem"),
    ('[registry.xua]\naudiences = ["x"]\n', "[registry.xua] audiences: no such key"),
])
def test_a_wrong_xua_setting_is_refused(idp, tmp_path, text, message):
    path = tmp_path / "xdsi.toml"
    path.write_text(text.format(pem=idp.cert_path))
    with pytest.raises(ConfigError) as e:
        xua.xua_settings(load(path, environ={}), "registry")
    assert message in str(e.value)


def test_an_assertion_sent_again_is_checked_again_but_for_its_signature(idp):
    """The signature's verdict is kept for the very same bytes; time, audience and any change are not."""
    signed = assertion(idp)
    settings = xua_settings(idp)
    assert isinstance(check(request(signed), settings), xua.Principal)
    assert isinstance(check(request(copy.deepcopy(signed)), settings), xua.Principal)
    later = NOW + datetime.timedelta(seconds=3600)
    assert failed(xua.check(request(signed).headers, settings, now=later), ns.WSSE_FAILED_AUTHENTICATION, "expired")
    other_audience = xua.XuaSettings(mode="optional", trusted_issuers=(str(idp.cert_path),), audience="urn:oid:1.2",
                                     clock_skew_seconds=60)
    assert failed(check(request(signed), other_audience), ns.WSSE_FAILED_AUTHENTICATION, "audience")
    changed = copy.deepcopy(signed)
    changed.find(f"{{{ns.SAML2}}}Subject/{{{ns.SAML2}}}NameID").text = "admin@hospital-a.example"
    assert failed(check(request(changed), settings), ns.WSSE_FAILED_AUTHENTICATION, "does not verify")
    assert isinstance(check(request(signed), xua_settings(idp)), xua.Principal)
    evil_trust = xua_settings(make_idp(idp.cert_path.parent, "another"))
    assert failed(check(request(signed), evil_trust), ns.WSSE_FAILED_AUTHENTICATION, "not a trusted")
