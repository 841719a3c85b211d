"""The demo's story, step by step, over the wire: identities, a CT study published, an order at
another hospital, the study arriving there reconciled. Every step checks that it really happened."""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree
from pynetdicom import AE

from affinity_domain import ns
from affinity_domain import certs, ebrim, mllp, secure_node
from affinity_domain.tls import TlsSettings
from affinity_domain.config import Config
from affinity_domain.exceptions import XdsiError
from affinity_domain.hl7 import first_segment
from affinity_domain.query_ids import FIND_DOCUMENTS
from affinity_domain.soap_client import SoapClient

from .pacs import LocalPacs
from .study import ct_study

HOSP_A, HOSP_B = "1.3.6.1.4.1.21367.2005.13.20.3000", "1.3.6.1.4.1.21367.2005.13.20.2000"


class StepFailed(XdsiError):
    """A step of the story did not happen as told."""


@dataclass
class Summary:
    steps: list[tuple[str, float, str]] = field(default_factory=list)

    def add(self, name: str, started: float, what: str) -> None:
        self.steps.append((name, time.monotonic() - started, what))
        print(f"  ✔ {what}  ({time.monotonic() - started:.1f} s)")


def bar(label: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stdout.write(f"\r    {label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stdout.flush()
    if done >= total:
        sys.stdout.write("\n")


def tls_on() -> None:
    """The demo on mutual TLS: the node's [tls] when set; else a test PKI (``xdsi certs``) in a temporary
    directory, given to the domain ``xdsi up`` starts as XDSI_TLS_* and used by the demo's own clients."""
    if secure_node.enabled():
        return
    pki = Path(tempfile.mkdtemp(prefix="xdsi-demo-pki-"))
    certs.make(pki, [socket.gethostname()])
    paths = {"cert": str(pki / "node.pem"), "key": str(pki / "node.key"), "ca": str(pki / "ca.pem")}
    for key, path in paths.items():
        os.environ[f"XDSI_TLS_{key.upper()}"] = path
    secure_node.use(TlsSettings(**paths, require_client_cert=True, allow_plaintext=False, handshake_timeout=10.0),
                    "demo")
    print(f"  mutual TLS with a test PKI in {pki}")


def wait_until(what: str, predicate, timeout: float, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise StepFailed(f"timed out waiting for {what}")


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 0.5).close()
        return True
    except OSError:
        return False


def hl7(host: str, port: int, text: str) -> str:
    reply = mllp.send(host, port, (text.replace("\n", "\r") + "\r").encode(), timeout=20).decode()
    return reply


def msa(reply: str) -> str:
    return first_segment(reply, "MSA")[1]


def adt(pid: str, oid: str, name: str, dob: str, sex: str, address: str, phone: str) -> str:
    return (f"MSH|^~\\&|ADT|HOSP|XDSI_PIX|XDSI|{time.strftime('%Y%m%d%H%M%S')}||ADT^A01^ADT_A01|"
            f"{uuid.uuid4().hex[:12]}|P|2.3.1\nEVN|A01|{time.strftime('%Y%m%d%H%M%S')}\n"
            f"PID|||{pid}^^^&{oid}&ISO||{name}||{dob}|{sex}|||{address}||{phone}\nPV1||O")


def pix_ids(cfg: Config, pid: str, oid: str) -> list[str]:
    s = cfg.section("pix")
    reply = hl7(s["host"], int(s["port"]),
                f"MSH|^~\\&|DEMO|HOSP|XDSI_PIX|XDSI|{time.strftime('%Y%m%d%H%M%S')}||QBP^Q23^QBP_Q21|"
                f"{uuid.uuid4().hex[:12]}|P|2.5\nQPD|IHE PIX Query|{uuid.uuid4().hex[:8]}|{pid}^^^&{oid}&ISO|\nRCP|I")
    pid = first_segment(reply, "PID")
    return pid[3].split("~") if pid else []


class Domain:
    """The running affinity domain: started here (``xdsi up``) unless one already answers."""

    def __init__(self, cfg: Config, data_dir: Path):
        self.cfg, self.process = cfg, None
        reg = cfg.section("registry")
        if listening(reg["host"], int(reg["port"])):
            print("  using the affinity domain already running")
            return
        env = dict(os.environ, XDSI_DATA_DIR=str(data_dir), XDSI_IMAGING_SOURCE_QUIET_SECONDS="2")
        if not cfg.section("imaging_source").get("peers"):
            # The demo's consumer may query and C-MOVE from the source (the fallback after RAD-69).
            consumer = cfg.section("consumer").get("ae_title", "XDSI_CONSUMER")
            env["XDSI_IMAGING_SOURCE_PEERS"] = (f'{{ consumer = {{ ae_title = "{consumer}", '
                                                'roles = ["query", "retrieve"] } }')
        log = open(data_dir / "demo-domain.log", "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "up"], env=env,
                                        stdout=log, stderr=log)

    def wait_ready(self, endpoints: list[tuple[str, int]]) -> None:
        def up(host: str, port: int) -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise StepFailed("the domain stopped; see demo-domain.log in the data dir")
            return listening(host, port)
        for host, port in endpoints:
            wait_until(f"{host}:{port}", lambda: up(host, port), 120)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def demo_token(cfg: Config, run_id: str) -> str:
    """A reader's token for this run (``demo-<run>``), made in the domain's token store."""
    from affinity_domain import db
    from affinity_domain.tokens import TokenStore
    store = TokenStore(db.database_url(cfg))
    try:
        return store.add(f"demo-{run_id.lower()}", "reader")
    finally:
        store.close()


def authorized(url: str, token: str) -> urllib.request.Request:
    return urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})


def run(cfg: Config, instances: int = 300) -> int:
    data_dir = cfg.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    pix, source, consumer = cfg.section("pix"), cfg.section("imaging_source"), cfg.section("consumer")
    pacs_ae, pacs_addr = consumer["local_pacs"].split("@")
    pacs_host, pacs_port = pacs_addr.split(":")
    print("xdsi demo — an imaging study shared across an affinity domain\n")
    started = time.monotonic()
    print("1. Starting the affinity domain")
    domain = Domain(cfg, data_dir)
    pacs = None
    try:
        domain.wait_ready([(cfg.section("registry")["host"], int(cfg.section("registry")["port"])),
                           (pix["host"], int(pix["port"])), (source["dicom_host"], int(source["dicom_port"])),
                           (consumer["host"], int(consumer["mllp_port"]))])
        summary.add("domain", started, "registry, repository, PIX manager, imaging source and consumer are up")

        run_id = uuid.uuid4().hex[:6].upper()
        mrn_a, mrn_b, mrn_c = f"A{run_id}", f"B{run_id}", f"C{run_id}"
        # Each run's patient is new to the index, so that runs on one domain do not meet.
        rnd = random.Random(run_id)
        dob = f"{rnd.randint(1940, 1999)}{rnd.randint(1, 12):02d}{rnd.randint(10, 28):02d}"
        last = int(dob[7])
        near = dob[:7] + str(last + 1 if last < 8 else last - 1)    # one digit off, still a real date
        phone = f"416-555-{rnd.randint(1000, 9999)}"
        print("\n2. Two hospitals register the same patient, with slightly different demographics")
        started = time.monotonic()
        for pid, oid, name, dob, sex, address, phone in [
            (mrn_a, HOSP_A, "Abernathy^Katherine", dob, "F", "12 Oak St^^Toronto^ON^M5V 2T6", phone),
            (mrn_b, HOSP_B, "Abernethy^Kate", dob, "F", "12 Oak Street^^Toronto^ON^M5V2T6",
             f"({phone[:3]}) {phone[4:]}"),
            (mrn_c, HOSP_B, "Abernathy^Katherine", near, "F", "", ""),
        ]:
            code = msa(hl7(pix["host"], int(pix["port"]), adt(pid, oid, name, dob, sex, address, phone)))
            if code != "AA":
                raise StepFailed(f"PIX answered {code} to the feed of {pid}")
            print(f"    ITI-8 {pid} ({name.replace('^', ' ')}, {dob}) -> {code}")
        ids = pix_ids(cfg, mrn_a, HOSP_A)
        if f"{mrn_b}^^^&{HOSP_B}&ISO" not in ids:
            raise StepFailed(f"hospital B's identity was not linked to hospital A's: {ids}")
        affinity = next(i for i in ids if cfg.domain["assigning_authority"] in i)
        reader = demo_token(cfg, run_id)       # the PIX admin API is authenticated: a reader's token of its own
        person = json.load(secure_node.urlopen(authorized(secure_node.url(
            f"http://{pix['http_host']}:{pix['http_port']}/persons?domain={HOSP_B}&pid={mrn_b}"), reader)))
        link = next(i for i in person["identities"] if i["pid"] == mrn_b)
        print(f"    linked by the scorecard: score {link['link_score']:.1f} ({link['link_explanation']})")
        review = secure_node.url(f"http://{pix['http_host']}:{pix['http_port']}/review")
        queue = json.load(secure_node.urlopen(authorized(review, reader)))
        held = [r for r in queue if mrn_c in (r["identity_pid"], r["candidate_pid"])]
        if not held:
            raise StepFailed("the near-miss patient did not reach the review queue")
        print(f"    near miss held for review: {mrn_c}, score {held[0]['score']:.1f}")
        summary.add("identity", started, f"{mrn_a} and {mrn_b} are one person ({affinity}); {mrn_c} awaits review")

        print(f"\n3. Hospital A sends a CT study ({instances} instances) to the imaging source")
        started = time.monotonic()
        accession = f"ACC{run_id}"
        datasets = ct_study(instances, mrn_a, HOSP_A, "ABERNATHY^KATHERINE", dob, "F", accession)
        send_study(datasets, source)
        summary.add("store", started, f"{instances} instances stored by C-STORE at {source['ae_title']}")

        print("\n4. The imaging source publishes a KOS manifest (RAD-68) once the study is quiet")
        started = time.monotonic()
        wait_until("the manifest in the registry", lambda: manifest_registered(cfg, affinity), 120)
        summary.add("publish", started, f"manifest registered for {affinity}")

        print("\n5. Hospital B books the patient: an order reaches the consumer")
        started = time.monotonic()
        pacs = LocalPacs(pacs_ae, int(pacs_port), data_dir / f"local-pacs-{run_id}")
        order = (f"MSH|^~\\&|RIS|HOSPB|XDSI_CONSUMER|XDSI|{time.strftime('%Y%m%d%H%M%S')}||ORM^O01^ORM_O01|"
                 f"{uuid.uuid4().hex[:12]}|P|2.3.1\nPID|||{mrn_b}^^^&{HOSP_B}&ISO||Abernethy^Kate||{dob}|F\n"
                 f"ORC|NW|ORD{run_id}\nOBR|1|ORD{run_id}||CTCHEST^CT Chest")
        code = msa(hl7(consumer["host"], int(consumer["mllp_port"]), order))
        if code != "AA":
            raise StepFailed(f"the consumer answered {code} to the order")
        print(f"    ORM^O01 for {mrn_b} -> {code}")
        deadline, shown = time.monotonic() + 180, -1
        while pacs.count() < instances and time.monotonic() < deadline:
            if pacs.count() != shown:
                shown = pacs.count()
                bar("local PACS", shown, instances)
            time.sleep(0.2)
        bar("local PACS", pacs.count(), instances)
        if pacs.count() < instances:
            raise StepFailed(f"only {pacs.count()} of {instances} instances reached the local PACS")
        wrong = [r for r in pacs.received.values() if r[0] != mrn_b or r[1] != HOSP_B]
        if wrong:
            raise StepFailed(f"{len(wrong)} instances arrived under another patient id: {wrong[0]}")
        summary.add("prefetch", started, f"{pacs.count()} instances in hospital B's PACS under {mrn_b} "
                                         f"(accession {next(iter(pacs.received.values()))[2]})")
    except StepFailed as e:
        print(f"\n  ✘ {e}")
        print("\nxdsi demo FAILED")
        return 1
    finally:
        if pacs:
            pacs.stop()
        domain.stop()
    print("\nSummary")
    for name, seconds, what in summary.steps:
        print(f"  {name:<9} {seconds:6.1f} s  {what}")
    print("\nxdsi demo: every step happened.")
    return 0


def send_study(datasets, source: dict) -> None:
    ae = AE("HOSPITAL_A")
    ae.add_requested_context(datasets[0].SOPClassUID, [datasets[0].file_meta.TransferSyntaxUID])
    assoc = ae.associate(source["dicom_host"], int(source["dicom_port"]), ae_title=source["ae_title"],
                         evt_handlers=[], tls_args=secure_node.dicom_tls_args(source["dicom_host"]))
    if not assoc.is_established:
        raise StepFailed("the imaging source refused the association")
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i, ds in enumerate(datasets, start=1):
            status = assoc.send_c_store(ds)
            if not status or status.Status != 0:
                raise StepFailed(f"C-STORE failed: {status}")
            if i % 10 == 0 or i == len(datasets):
                bar("C-STORE", i, len(datasets))
    finally:
        assoc.release()


def manifest_registered(cfg: Config, patient: str) -> bool:
    reg = cfg.section("registry")
    q = etree.fromstring(
        f'<query:AdhocQueryRequest xmlns:query="{ns.QUERY}" xmlns:rim="{ns.RIM}">'
        f'<query:ResponseOption returnType="ObjectRef"/>'
        f'<rim:AdhocQuery id="{FIND_DOCUMENTS}">'
        f'<rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList><rim:Value>\'{patient}\'</rim:Value>'
        f'</rim:ValueList></rim:Slot><rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList>'
        f"<rim:Value>('{ebrim.APPROVED}')</rim:Value></rim:ValueList></rim:Slot>"
        f'<rim:Slot name="$XDSDocumentEntryFormatCode"><rim:ValueList>'
        f"<rim:Value>('{ebrim.KOS_FORMAT}')"
        f'</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>'
        .replace("&", "&amp;").encode())
    r = SoapClient(f"http://{reg['host']}:{reg['port']}{reg['path']}", timeout=10).call(
        ns.STORED_QUERY, q)
    body = r.body
    return body is not None and len(body.findall(f"{{{ns.RIM}}}RegistryObjectList/{{{ns.RIM}}}ObjectRef")) > 0
