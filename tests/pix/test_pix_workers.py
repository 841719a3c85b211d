"""The PIX manager's outbox under a peer that rejects what it is sent: the message is quarantined
(kept, counted in the run record and by ``xdsi status``, logged) and the others are delivered."""
import json
import subprocess
import sys

import psycopg

from tests.pix.pixmsg import HOSP_A, HOSP_B, ack, adt, cx, new_id
from tests.services import Hl7Receiver, start_pix, wait_until


def _outbox(pix_data_dir) -> dict:
    try:
        return json.loads((pix_data_dir / "run" / "pix.json").read_text()).get("workers", {}).get("outbox") or {}
    except (OSError, ValueError):
        return {}


def test_a_message_a_subscriber_rejects_is_quarantined_and_the_others_delivered(new_database, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("XDSI_WORKERS_CHECK_SECONDS", "0.2")
    rejecting, accepting = Hl7Receiver(code="AR"), Hl7Receiver()
    database = new_database()
    pix = start_pix(database, tmp_path, registry_feed="",
                    subscribers=json.dumps([rejecting.address, accepting.address]))
    try:
        a, b = cx(new_id("A"), HOSP_A), cx(new_id("B"), HOSP_B)
        assert ack(pix, adt("A01", a, family="Quarantine", given="Olga", dob="19610203", sex="F",
                            address="3 Elm St^^Ottawa^ON^K1A0B1", phone="6135550199")) == "AA"
        assert ack(pix, adt("A01", b, family="Quarantine", given="Olga", dob="19610203", sex="F",
                            address="3 Elm Street^^Ottawa^ON^K1A 0B1", phone="(613) 555-0199")) == "AA"
        accepting.wait_for(lambda m: "ADT^A31" in m and a in m and b in m, 30)
        assert rejecting.wait_for(lambda m: "ADT^A31" in m, 30)
        outbox = wait_until(lambda: (o := _outbox(tmp_path)) and o["quarantined"] >= 1 and o, 30)
        assert outbox["alive"]
        with psycopg.connect(database) as conn:
            rows = conn.execute("SELECT destination, last_error, delivered_at IS NOT NULL FROM pix.outbox "
                                "WHERE quarantined").fetchall()
        assert rows and all(d == rejecting.address and "not accepted" in e and not done for d, e, done in rows)
        out = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "status"], env=pix.env,
                             capture_output=True, text=True, timeout=60)
        line = next(line for line in out.stdout.splitlines() if line.startswith("pix"))
        assert f"quarantined: outbox {outbox['quarantined']}" in line, line
    finally:
        pix.stop()
        rejecting.stop()
        accepting.stop()
