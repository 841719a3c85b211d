"""What XUA and the opt-out rule leave in the audit trail: a process started with ``audit.start``
(syslog over UDP to a socket of this test) serves a forged ITI-18 through the SOAP door, and
answers about an opted-out patient withheld and under break-glass; the datagrams are read back."""
from __future__ import annotations

import re
import socket
import subprocess
import sys

from tests.services import ROOT

SCRIPT = """
import io, sys, datetime
sys.path.insert(0, {root!r})
from lxml import etree
from affinity_domain import audit, config, consent, ns, soap, soap_door, xua
from tests.xua_idp import AUDIENCE, assertion, make_idp
from pathlib import Path

tmp = Path({tmp!r})
idp = make_idp(tmp, "idp")
cfg = config.load(None, tmp, environ={{"XDSI_AUDIT_DESTINATIONS": '["udp://127.0.0.1:{port}"]'}})
audit.start(cfg, "xua-test")
settings = xua.XuaSettings(mode="optional", trusted_issuers=(str(idp.cert_path),), audience=AUDIENCE,
                           clock_skew_seconds=60)
door = soap_door.SoapDoor({{ns.STORED_QUERY: soap_door.Route(f"{{{{{{ns.QUERY}}}}}}AdhocQueryRequest",
                                                            ns.STORED_QUERY_RESPONSE, lambda e: None)}},
                          xua=settings, node="xdsi-registry")
now = datetime.datetime.now(datetime.timezone.utc)
expired = assertion(idp, now=now, not_before=-7200, not_on_or_after=-3600)
body = etree.Element(f"{{{{{{ns.QUERY}}}}}}AdhocQueryRequest")
raw = soap.to_bytes(soap.envelope(body, ns.STORED_QUERY, headers=(soap.security_header(expired),)))
status = []
door({{"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/soap+xml", "CONTENT_LENGTH": str(len(raw)),
       "wsgi.input": io.BytesIO(raw), "REMOTE_ADDR": "192.0.2.7"}}, lambda s, h: status.append(s))
assert status[0].startswith("400"), status
glass = xua.check([soap.security_header(assertion(idp, now=now, purpose=("EMERGENCY", "2.16.840.1.113883.3.18.7.1",
                                                                         "Emergency")))], settings)
assert isinstance(glass, xua.Principal), glass
consent.record(["WITHHELD^^^&1.2.3&ISO"], None, node="xdsi-registry", transaction="ITI-18", peer="192.0.2.8")
consent.record(["GLASS^^^&1.2.3&ISO"], glass, node="xdsi-repository", transaction="ITI-43")
audit.stop(timeout=10)
"""


def test_a_refused_assertion_and_each_opted_out_answer_are_audited(tmp_path):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(15)
    try:
        script = SCRIPT.format(root=str(ROOT), tmp=str(tmp_path), port=receiver.getsockname()[1])
        run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        records = []
        while len(records) < 5:     # Application Start and Stop, and our three
            records.append(receiver.recv(65536).decode())
    finally:
        receiver.close()

    def events(code: str) -> list[str]:
        return [r for r in records if re.search(f'<EventID csd-code="{code}"', r)]

    [login] = events("110114")
    assert 'EventOutcomeIndicator="4"' in login and "has expired" in login and "192.0.2.7" in login
    alerts = events("110113")
    withheld = next(r for r in alerts if "WITHHELD" in r)
    assert 'csd-code="110132"' in withheld and "192.0.2.8" in withheld and "withheld" in withheld
    glass = next(r for r in alerts if "GLASS" in r)
    assert 'csd-code="110127"' in glass and "dr.house@hospital-a.example" in glass and "break-glass" in glass
    assert "EMERGENCY" in glass     # the purpose of use
