"""XUA (ITI-40) at the SOAP doors, ITI-51 authorisation and patient opt-out, over real sockets:
the registry, the repository and the imaging source each run as ``xdsi serve`` with the test IdP
of tests/xua_idp.py trusted; requests go out with our SOAP client carrying the assertion in
``wsse:Security`` (mustUnderstand), DICOM instances go in with DCMTK's storescu."""
from __future__ import annotations

import datetime
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from lxml import etree

from affinity_domain import mtom, ns
from affinity_domain.soap_client import SoapClient
from tests.imaging_source.source_dicom import make_study, storescu
from tests.repository.pnr import provide_body, retrieve_body, with_hash
from tests.services import ROOT, free_port, launch, start_registry, start_repository, wait_until
from tests.xds import APPROVED, FIND_DOCUMENTS, Doc, feed, new_patient, stored_query, submission
from tests.xua_idp import AUDIENCE, assertion, make_idp

REPOSITORY_ID = "1.3.6.1.4.1.21367.13.40.301"
SOURCE_ID = "1.3.6.1.4.1.21367.13.40.302"
MPQ_FIND_DOCUMENTS = "urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f"
POPULATION_ROLE = ("xdsi-population-health", "1.3.6.1.4.1.21367.2017.7", "Population health analyst")
EMERGENCY = ("EMERGENCY", "2.16.840.1.113883.3.18.7.1", "Emergency Treatment")
STUDY_REF = "urn:ihe:iti:xds:2016:studyInstanceUID"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture(scope="module")
def idps(tmp_path_factory):
    d = tmp_path_factory.mktemp("idp")
    return make_idp(d, "test-idp"), make_idp(d, "evil")


@pytest.fixture(scope="module")
def domain(new_database, tmp_path_factory, idps):
    """Registry, repository (both optional XUA) and imaging source on one database; a second
    registry door with ``[xua] mode = "required"``; two patients, one opted out by the CLI."""
    idp, _ = idps
    xua = {"xua_trusted_issuers": f'["{idp.cert_path}"]', "xua_audience": AUDIENCE}
    database = new_database()
    registry = start_registry(database, tmp_path_factory.mktemp("registry"), **xua,
                              multi_patient_roles=f'["{POPULATION_ROLE[0]}"]')
    strict = start_registry(database, tmp_path_factory.mktemp("strict"), **xua, xua_mode="required")
    repository = start_repository(database, registry.url, tmp_path_factory.mktemp("repository"), **xua)
    tmp = tmp_path_factory.mktemp("source")
    dicom_port, http_port = free_port(), free_port()
    source, _ = launch("imaging-source", tmp, database, {
        "dicom_port": dicom_port, "port": http_port, "quiet_seconds": 3600, "registry_url": registry.url,
        "repository_url": repository.url, "pix_port": free_port(), "store_dir": tmp / "images",
        "min_free_bytes": 0, **xua}, [dicom_port, http_port])
    source_url = f"http://127.0.0.1:{http_port}/imaging-source"
    shown, hidden = new_patient(), new_patient()
    data = {}
    for who in (shown, hidden):
        feed(registry, who)
        doc = with_hash(Doc(), f"report of {who}".encode())
        body, parts = provide_body(who, [(doc, f"report of {who}".encode())])
        r = client(repository.url, idp).call(ns.PROVIDE_AND_REGISTER, etree.fromstring(body),
                                             [mtom.OutPart(cid, "text/plain", data=b) for cid, b in parts])
        assert r.body.get("status", "").endswith(":Success"), etree.tostring(r.body)
        study = make_study(tmp / f"study-{len(data)}", f"L{len(data)}", series=1, per_series=1)
        assert storescu(dicom_port, study.files).returncode == 0
        # The study's manifest, as the imaging source would publish it (PIX is not running here).
        manifest = Doc(reference_ids=(f"{study.uid}^^^^{STUDY_REF}",))
        assert registry_call(registry.url, ns.REGISTER, submission(who, [manifest]), idp).get(
            "status", "").endswith(":Success")
        data[who] = (doc.unique_id, study)
    cli = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "registry", "consent", "--patient", hidden,
                          "--opt-out", "--by", "the patient's own request"], env=registry.env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    yield {"registry": registry.url, "strict": strict.url, "repository": repository.url, "source": source_url,
           "shown": shown, "hidden": hidden, "data": data, "consent": registry.url.replace("/registry", "/consent")}
    source.terminate()
    source.wait(timeout=30)
    for service in (repository, strict, registry):
        service.stop()


def client(url: str, signed_by=None, **assertion_kw) -> SoapClient:
    """Our SOAP client; with ``signed_by``, every request carries a fresh assertion of that IdP."""
    if signed_by is None and not assertion_kw:
        return SoapClient(url)
    return SoapClient(url, assertion=lambda: assertion(signed_by, now=now(), **assertion_kw))


def registry_call(url: str, action: str, body: str, signed_by=None, **kw) -> etree._Element:
    return client(url, signed_by, **kw).call(action, etree.fromstring(body)).body


def find_documents(url: str, patient: str, signed_by=None, **kw) -> etree._Element:
    query = stored_query(FIND_DOCUMENTS, {"$XDSDocumentEntryPatientId": f"'{patient}'",
                                          "$XDSDocumentEntryStatus": f"('{APPROVED}')"})
    return registry_call(url, ns.STORED_QUERY, query, signed_by, **kw)


def unique_ids(answer: etree._Element) -> set[str]:
    return {e.get("value") for e in answer.iter(f"{{{ns.RIM}}}ExternalIdentifier")
            if e.get("identificationScheme") == "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"}


def error_codes(answer: etree._Element) -> list[str]:
    return [e.get("errorCode") for e in answer.iter(f"{{{ns.RS}}}RegistryError")]


def retrieve(domain, patient: str, signed_by=None, **kw):
    uid = domain["data"][patient][0]
    return client(domain["repository"], signed_by, **kw).call(
        ns.RETRIEVE, etree.fromstring(retrieve_body([(REPOSITORY_ID, uid)])), use_mtom=True)


def rad69(domain, patient: str, signed_by=None, **kw):
    study = domain["data"][patient][1]
    sop = study.sop_uids()[0]
    xml = (f'<iherad:RetrieveImagingDocumentSetRequest xmlns:iherad="{ns.IHERAD}" xmlns:xdsb="{ns.XDSB}">'
           f'<iherad:StudyRequest studyInstanceUID="{study.uid}"><iherad:SeriesRequest '
           f'seriesInstanceUID="{study.series[0]}"><xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{SOURCE_ID}'
           f'</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>{sop}</xdsb:DocumentUniqueId></xdsb:DocumentRequest>'
           f'</iherad:SeriesRequest></iherad:StudyRequest><iherad:TransferSyntaxUIDList><iherad:TransferSyntaxUID>'
           f'1.2.840.10008.1.2.1</iherad:TransferSyntaxUID></iherad:TransferSyntaxUIDList>'
           f'</iherad:RetrieveImagingDocumentSetRequest>')
    return client(domain["source"], signed_by, **kw).call(ns.RETRIEVE_IMAGING, etree.fromstring(xml))


def wsse_fault(response) -> str:
    """The WS-Security subcode of a SOAP fault answer ("" for none)."""
    if response.http_status != 400 or response.body.tag != f"{{{ns.SOAP12}}}Fault":
        return ""
    value = response.body.find(f"{{{ns.SOAP12}}}Code/{{{ns.SOAP12}}}Subcode/{{{ns.SOAP12}}}Value")
    prefix, _, local = (value.text or "").partition(":")
    return local if value.nsmap.get(prefix) == ns.WSSE else ""


# ------------------------------------------------------------ the good assertion, and none

def test_a_signed_assertion_is_served_on_every_door_and_the_same_tampered_is_not(domain, idps):
    idp, evil = idps
    shown = domain["shown"]
    assert domain["data"][shown][0] in unique_ids(find_documents(domain["registry"], shown, idp))
    got = retrieve(domain, shown, idp)
    assert got.http_status == 200 and [a.read() for a in got.attachments.values()] == [f"report of {shown}".encode()]
    imaging = wait_until(lambda: (r := rad69(domain, shown, idp)).attachments and r, timeout=30)
    assert imaging.http_status == 200 and len(imaging.attachments) == 1
    for door in (_iti18, _iti43, _rad69):
        assert wsse_fault(door(domain, _tampered(idp, evil))) == "FailedAuthentication", door


def test_without_assertion_optional_serves_and_required_faults(domain, idps):
    idp, _ = idps
    shown = domain["shown"]
    assert domain["data"][shown][0] in unique_ids(find_documents(domain["registry"], shown))
    assert len(retrieve(domain, shown).attachments) == 1
    query = stored_query(FIND_DOCUMENTS, {"$XDSDocumentEntryPatientId": f"'{shown}'",
                                          "$XDSDocumentEntryStatus": f"('{APPROVED}')"})
    bare = client(domain["strict"]).call(ns.STORED_QUERY, etree.fromstring(query))
    assert wsse_fault(bare) == "InvalidSecurity"
    assert domain["data"][shown][0] in unique_ids(find_documents(domain["strict"], shown, idp))


# ------------------------------------------------------------ forged assertions, on each door

def _tampered(idp, evil):
    signed = assertion(idp, now=now())
    signed.find(f"{{{ns.SAML2}}}Subject/{{{ns.SAML2}}}NameID").text = "admin@hospital-a.example"
    return signed


FORGERIES = {
    "unsigned": lambda idp, evil: assertion(None, now=now()),
    "expired": lambda idp, evil: assertion(idp, now=now(), not_before=-7200, not_on_or_after=-3600),
    "wrong audience": lambda idp, evil: assertion(idp, now=now(), audience="urn:oid:9.9.9"),
    "tampered": _tampered,
    "untrusted issuer": lambda idp, evil: assertion(evil, now=now()),
}


def _iti18(domain, forged):
    query = stored_query(FIND_DOCUMENTS, {"$XDSDocumentEntryPatientId": f"'{domain['shown']}'",
                                          "$XDSDocumentEntryStatus": f"('{APPROVED}')"})
    return SoapClient(domain["registry"], assertion=lambda: forged).call(ns.STORED_QUERY, etree.fromstring(query))


def _iti51(domain, forged):
    query = stored_query(MPQ_FIND_DOCUMENTS, {"$XDSDocumentEntryPatientId": f"('{domain['shown']}')",
                                              "$XDSDocumentEntryStatus": f"('{APPROVED}')"})
    return SoapClient(domain["registry"], assertion=lambda: forged).call(ns.MULTI_PATIENT_QUERY,
                                                                        etree.fromstring(query))


def _iti57(domain, forged):
    return SoapClient(domain["registry"], assertion=lambda: forged).call(
        ns.UPDATE, etree.fromstring(submission(domain["shown"], [Doc()])))


def _iti43(domain, forged):
    uid = domain["data"][domain["shown"]][0]
    return SoapClient(domain["repository"], assertion=lambda: forged).call(
        ns.RETRIEVE, etree.fromstring(retrieve_body([(REPOSITORY_ID, uid)])), use_mtom=True)


def _rad69(domain, forged):
    study = domain["data"][domain["shown"]][1]
    xml = (f'<iherad:RetrieveImagingDocumentSetRequest xmlns:iherad="{ns.IHERAD}" xmlns:xdsb="{ns.XDSB}">'
           f'<iherad:StudyRequest studyInstanceUID="{study.uid}"/><iherad:TransferSyntaxUIDList>'
           f'<iherad:TransferSyntaxUID>1.2.840.10008.1.2.1</iherad:TransferSyntaxUID></iherad:TransferSyntaxUIDList>'
           f'</iherad:RetrieveImagingDocumentSetRequest>')
    return SoapClient(domain["source"], assertion=lambda: forged).call(ns.RETRIEVE_IMAGING, etree.fromstring(xml))


DOORS = {"ITI-18": _iti18, "ITI-51": _iti51, "ITI-57": _iti57, "ITI-43": _iti43, "RAD-69": _rad69}


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_assertion_gets_the_ws_security_fault(domain, idps, door, forgery):
    forged = FORGERIES[forgery](*idps)
    answer = DOORS[door](domain, forged)
    assert wsse_fault(answer) == "FailedAuthentication", (answer.http_status, etree.tostring(answer.body)[:400])


# ------------------------------------------------------------ ITI-51

def test_iti51_is_answered_only_for_an_authorised_role(domain, idps):
    idp, _ = idps
    shown = domain["shown"]
    query = stored_query(MPQ_FIND_DOCUMENTS, {"$XDSDocumentEntryPatientId": f"('{shown}')",
                                              "$XDSDocumentEntryStatus": f"('{APPROVED}')"})
    for refused in (None, idp):     # anonymous; a physician's assertion
        answer = registry_call(domain["registry"], ns.MULTI_PATIENT_QUERY, query, refused)
        assert error_codes(answer) == ["XDSRegistryError"] and not unique_ids(answer)
    # only a class code: before, every patient's documents
    by_class = stored_query(MPQ_FIND_DOCUMENTS, {"$XDSDocumentEntryClassCode": "('REPORTS^^1.3.6.1.4.1.19376.1.2.6.1')",
                                                 "$XDSDocumentEntryStatus": f"('{APPROVED}')"})
    assert not unique_ids(registry_call(domain["registry"], ns.MULTI_PATIENT_QUERY, by_class))
    answer = registry_call(domain["registry"], ns.MULTI_PATIENT_QUERY, query, idp, roles=(POPULATION_ROLE,))
    assert error_codes(answer) == [] and domain["data"][shown][0] in unique_ids(answer)


# ------------------------------------------------------------ patient opt-out

def test_an_opted_out_patient_is_hidden_on_iti18_iti43_and_rad69(domain, idps):
    idp, _ = idps
    hidden = domain["hidden"]
    uid, study = domain["data"][hidden]
    assert uid not in unique_ids(find_documents(domain["registry"], hidden, idp))
    assert uid not in unique_ids(find_documents(domain["registry"], hidden))
    got = retrieve(domain, hidden, idp)
    assert not got.attachments and error_codes(got.body) == ["XDSDocumentUniqueIdError"]
    imaging = rad69(domain, hidden, idp)
    assert not imaging.attachments and error_codes(imaging.body) == ["XDSDocumentUniqueIdError"], \
        etree.tostring(imaging.body)
    # ... nor by DICOMweb: left out of QIDO-RS, 404 on WADO-RS; the other patient's study is served
    web = domain["source"].replace("/imaging-source", "/dicomweb")

    def metadata(study) -> int:
        try:
            return urllib.request.urlopen(f"{web}/studies/{study.uid}/metadata", timeout=30).status
        except urllib.error.HTTPError as e:
            return e.code

    for who, seen in ((domain["shown"], True), (hidden, False)):
        their = domain["data"][who][1]
        assert wait_until(lambda: metadata(their) == 200, timeout=30) if seen else metadata(their) == 404
        search = urllib.request.urlopen(f"{web}/studies?StudyInstanceUID={their.uid}", timeout=30)
        assert (search.status == 200) is seen and (their.uid in search.read().decode()) is seen
    # ... nor on ITI-51 for an authorised role
    query = stored_query(MPQ_FIND_DOCUMENTS, {"$XDSDocumentEntryPatientId": f"('{hidden}','{domain['shown']}')",
                                              "$XDSDocumentEntryStatus": f"('{APPROVED}')"})
    answer = registry_call(domain["registry"], ns.MULTI_PATIENT_QUERY, query, idp, roles=(POPULATION_ROLE,))
    assert uid not in unique_ids(answer) and domain["data"][domain["shown"]][0] in unique_ids(answer)


def test_break_glass_sees_an_opted_out_patient(domain, idps):
    idp, _ = idps
    hidden = domain["hidden"]
    uid, _ = domain["data"][hidden]
    assert uid not in unique_ids(find_documents(domain["registry"], hidden, idp))     # treating, not emergency
    assert not retrieve(domain, hidden, idp).attachments and not rad69(domain, hidden, idp).attachments
    assert uid in unique_ids(find_documents(domain["registry"], hidden, idp, purpose=EMERGENCY))
    assert uid in unique_ids(find_documents(domain["registry"], hidden, idp,
                                            roles=(("emergency", "1.3.6.1.4.1.21367.2017.7", "Emergency"),)))
    got = retrieve(domain, hidden, idp, purpose=EMERGENCY)
    assert [a.read() for a in got.attachments.values()] == [f"report of {hidden}".encode()]
    imaging = wait_until(lambda: (r := rad69(domain, hidden, idp, purpose=EMERGENCY)).attachments and r, timeout=30)
    assert len(imaging.attachments) == 1


def _consent_api(domain, method: str, body: dict | None = None, query: str = ""):
    request = urllib.request.Request(domain["consent"] + query, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


def test_the_consent_api_opts_a_patient_out_and_in(domain, idps):
    idp, _ = idps
    shown = domain["shown"]
    uid = domain["data"][shown][0]
    try:
        assert _consent_api(domain, "POST", {"patient": shown, "opted_out": True, "by": "front desk"})["opted_out"]
        state = _consent_api(domain, "GET", query="?" + urllib.parse.urlencode({"patient": shown}))
        assert state["opted_out"] is True and state["by"] == "front desk (loopback)"
        assert uid not in unique_ids(find_documents(domain["registry"], shown, idp))
        assert not retrieve(domain, shown, idp).attachments
    finally:
        _consent_api(domain, "POST", {"patient": shown, "opted_out": False, "by": "front desk"})
    assert uid in unique_ids(find_documents(domain["registry"], shown, idp))
    with pytest.raises(urllib.error.HTTPError) as e:
        _consent_api(domain, "POST", {"patient": shown, "opted_out": "yes", "by": "x"})
    assert e.value.code == 400
