"""Connectathon-style scenarios over real sockets between real processes, driven by peers nobody here
wrote wherever one exists: python-hl7's mllp_send, DCMTK storescu, zeep with IHE's WSDL, dciodvfy."""
import subprocess
import sys
import time
import uuid
from pathlib import Path

from pydicom import dcmread

from affinity_domain import ns
from tests.hospital import HOSP_A, adt, linked_patient, order, send_study, stored_for
from tests.services import wait_until
from tests.shared import IHE, needs
from tests.xds import DOMAIN, ack_code, mllp_send

MLLP_SEND = str(Path(sys.executable).parent / "mllp_send")
KOS_FORMAT = "1.2.840.10008.5.1.4.1.1.88.59^^1.2.840.10008.2.6.1"


def peer_send(port: int, message: bytes, tmp_path: Path) -> str:
    f = tmp_path / f"{uuid.uuid4().hex}.hl7"
    f.write_bytes(b"\x0b" + message + b"\x1c\x0d")
    out = subprocess.run([MLLP_SEND, "-p", str(port), "-f", str(f), "127.0.0.1"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.replace("\n", "\r")


def qbp(pid: str, oid: str) -> bytes:
    return (f"MSH|^~\\&|PEER|HOSP|XDSI_PIX|XDSI|{time.strftime('%Y%m%d%H%M%S')}"
            f"||QBP^Q23^QBP_Q21|{uuid.uuid4().hex[:10]}"
            f"|P|2.5\rQPD|IHE PIX Query|q1|{pid}^^^&{oid}&ISO|\rRCP|I\r").encode()


def affinity_ids(rsp: str) -> list[str]:
    pid = [s for s in rsp.split("\r") if s.startswith("PID|")]
    return pid[0].split("|")[3].split("~") if pid else []


def zeep_find_documents(registry_url: str, patient: str) -> list:
    import zeep
    from zeep.transports import Transport

    class LocalTransport(Transport):
        def load(self, url):
            if url.endswith("xml.xsd"):
                return (IHE / "schema" / "ebRS" / "xml.xsd").read_bytes()
            if "HL7V3" in url:
                return (f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:hl7-org:v3">'
                        f'<xs:element name="{Path(url).stem}" type="xs:anyType"/></xs:schema>').encode()
            return super().load(url)

    client = zeep.Client(str(IHE / "wsdl" / "XDS.b_DocumentRegistry.wsdl"),
                         transport=LocalTransport(), settings=zeep.Settings(strict=False))
    service = client.create_service(f"{{{ns.XDSB}}}DocumentRegistry_Binding_Soap12", registry_url)
    result = service.DocumentRegistry_RegistryStoredQuery(
        ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
        AdhocQuery={"id": "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", "Slot": [
            {"name": "$XDSDocumentEntryPatientId", "ValueList": {"_value_1": [{"Value": f"'{patient}'"}]}},
            {"name": "$XDSDocumentEntryStatus",
             "ValueList": {"_value_1": [{"Value": "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"}]}},
            {"name": "$XDSDocumentEntryFormatCode", "ValueList": {"_value_1": [{"Value": f"('{KOS_FORMAT}')"}]}}]})
    assert result.status.endswith(":Success")
    listing = result.RegistryObjectList
    return list(listing._raw_elements or []) if listing is not None else []


def test_identity_feed_and_cross_reference(chain, tmp_path):
    a, b = f"A{uuid.uuid4().hex[:8]}", f"B{uuid.uuid4().hex[:8]}"
    family = "Okafor" + uuid.uuid4().hex[:4]
    assert "MSA|AA" in peer_send(chain.pix.mllp[1], adt(a, HOSP_A, family=family), tmp_path)
    assert "MSA|AA" in peer_send(chain.pix.mllp[1], adt(b, "1.3.6.1.4.1.21367.2005.13.20.2000", family=family),
                                 tmp_path)
    rsp = peer_send(chain.pix.mllp[1], qbp(a, HOSP_A), tmp_path)
    ids = affinity_ids(rsp)
    assert "QAK|q1|OK" in rsp and f"{b}^^^&1.3.6.1.4.1.21367.2005.13.20.2000&ISO" in ids
    assert any(DOMAIN in i for i in ids)


@needs(IHE)
def test_publish_discover_and_retrieve(chain, tmp_path):
    a, b = linked_patient(chain)
    study = send_study(chain, tmp_path, a, HOSP_A, count=6)               # DCMTK storescu
    rsp = peer_send(chain.pix.mllp[1], qbp(a, HOSP_A), tmp_path)
    affinity = next(i for i in affinity_ids(rsp) if DOMAIN in i)
    entries = wait_until(lambda: zeep_find_documents(chain.registry.url, affinity), 60, 0.5)
    [entry] = entries
    refs = [v.text for s in entry.iter("{*}Slot") if s.get("name") == "urn:ihe:iti:xds:2013:referenceIdList"
            for v in s.iter("{*}Value")]
    assert any(r.startswith(study) for r in refs)
    unique_id = next(e.get("value") for e in entry.iter("{*}ExternalIdentifier")
                     if e.get("identificationScheme") == "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab")
    from tests.repository.pnr import retrieve
    reply = retrieve(chain.repository.url, [("1.3.6.1.4.1.21367.13.40.301", unique_id)])
    mime, data = reply.documents()[unique_id]
    kos = tmp_path / "manifest.dcm"
    kos.write_bytes(data)
    out = subprocess.run(["/usr/bin/dciodvfy", str(kos)], capture_output=True, text=True)
    assert not [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert str(dcmread(kos).StudyInstanceUID) == study


@needs(IHE)
def test_merge_seen_by_a_later_query(chain, tmp_path):
    """Hospital A finds two records of one patient; after its A40 the registry answers for the survivor."""
    keep, dup = f"K{uuid.uuid4().hex[:8]}", f"D{uuid.uuid4().hex[:8]}"
    assert ack_code(mllp_send(chain.pix.mllp, adt(keep, HOSP_A, family="Lindqvist" + keep, given="Ebba",
                                                  dob="19770101", sex="F"))) == "AA"
    assert ack_code(mllp_send(chain.pix.mllp, adt(dup, HOSP_A, family="Holm" + dup, given="Sven",
                                                  dob="19880808"))) == "AA"
    send_study(chain, tmp_path, dup, HOSP_A, count=3)
    dup_affinity = next(i for i in affinity_ids(peer_send(chain.pix.mllp[1], qbp(dup, HOSP_A), tmp_path))
                        if DOMAIN in i)
    wait_until(lambda: zeep_find_documents(chain.registry.url, dup_affinity), 60, 0.5)
    keep_affinity = next(i for i in affinity_ids(peer_send(chain.pix.mllp[1], qbp(keep, HOSP_A), tmp_path))
                         if DOMAIN in i)
    assert zeep_find_documents(chain.registry.url, keep_affinity) == []
    merge = adt(keep, HOSP_A, family="Lindqvist" + keep, given="Ebba", dob="19770101", sex="F").replace(
        b"ADT^A01^ADT_A01", b"ADT^A40^ADT_A39").replace(b"PV1||O\r", f"MRG|{dup}^^^&{HOSP_A}&ISO\r".encode())
    assert "MSA|AA" in peer_send(chain.pix.mllp[1], merge, tmp_path)
    found = wait_until(lambda: zeep_find_documents(chain.registry.url, keep_affinity), 30, 0.5)
    assert len(found) == 1


def test_an_updated_study_is_fetched_again_through_its_replacing_manifest(chain, tmp_path):
    """RPLC seen by the consumer: a series added after the first prefetch reaches the local PACS."""
    a, b = linked_patient(chain)
    first = tmp_path / "first"
    first.mkdir()
    study = send_study(chain, first, a, HOSP_A, count=4)
    time.sleep(4)
    assert ack_code(mllp_send(("127.0.0.1", chain.consumer_mllp), order(b))) == "AA"
    wait_until(lambda: [j for j in stored_for(chain, b) if j["state"] == "stored"], 90, 0.5)
    more = tmp_path / "more"
    more.mkdir()
    send_study(chain, more, a, HOSP_A, count=2, study=study)          # a new series in the same study
    time.sleep(4)                                                     # quiet, then the RPLC manifest
    assert ack_code(mllp_send(("127.0.0.1", chain.consumer_mllp), order(b))) == "AA"
    jobs_b = wait_until(lambda: [j for j in stored_for(chain, b) if j["state"] == "stored"]
                        if len([j for j in stored_for(chain, b) if j["state"] == "stored"]) == 2 else None, 90, 0.5)
    newest = max(jobs_b, key=lambda j: j["id"])
    assert newest["study_uid"] == study and newest["instances_total"] == 6
    received = {dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in chain.pacs.files()}
    sent = {dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in list(first.iterdir()) + list(more.iterdir())}
    assert sent <= received
