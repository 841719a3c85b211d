"""The PIX manager over real MLLP and HTTP against real PostgreSQL, forwarding to a real registry."""
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

from affinity_domain import ns
from tests.pix.pixmsg import DOMAIN, HOSP_A, HOSP_B, ack, adt, cx, new_id, query
from tests.xds import Doc, envelope, post, submission
from tests.services import TEST_TOKEN_NAME


def affinity_id(ids: list[str]) -> str:
    return next(i for i in ids if DOMAIN in i)


def test_every_create_event_and_update_are_acknowledged(domain):
    _, pix = domain
    for event in ("A01", "A04", "A05"):
        pid = cx(new_id(), HOSP_A)
        assert ack(pix, adt(event, pid, family=f"Ev{event}", given="Solo", dob="19010101")) == "AA"
        code, status, ids, _ = query(pix, pid)
        assert (code, status) == ("AA", "OK") and len(ids) == 1 and DOMAIN in ids[0]
    assert ack(pix, adt("A08", pid, family="Renamed", given="Solo", dob="19010101")) == "AA"
    person = json.load(urllib.request.urlopen(f"{pix.http}/persons?domain={HOSP_A}&pid={pid.split('^')[0]}"))
    assert person["identities"][0]["demographics"]["family"] == "RENAMED"


def test_two_hospitals_same_patient_are_linked_with_an_explanation(domain, subscriber):
    _, pix = domain
    a, b = cx(new_id("A"), HOSP_A), cx(new_id("B"), HOSP_B)
    assert ack(pix, adt("A01", a, family="Abernathy", given="Katherine", dob="19720314", sex="F",
                        address="12 Oak St^^Toronto^ON^M5V2T6", phone="4165550101")) == "AA"
    assert ack(pix, adt("A01", b, family="Abernethy", given="Kate", dob="19720314", sex="F",
                        address="12 Oak Street^^Toronto^ON^M5V 2T6", phone="(416) 555-0101")) == "AA"
    code, status, ids, _ = query(pix, a)
    assert (code, status) == ("AA", "OK") and b in ids and affinity_id(ids)
    code, status, ids, _ = query(pix, a, [HOSP_B])
    assert ids == [b]
    person = json.load(urllib.request.urlopen(f"{pix.http}/persons?domain={HOSP_B}&pid={b.split('^')[0]}"))
    linked = [i for i in person["identities"] if i["domain"] == HOSP_B][0]
    assert linked["link_score"] > 70 and "family" in linked["link_explanation"]
    subscriber.wait_for(lambda m: "ADT^A31" in m and a in m and b in m)


def test_near_miss_goes_to_review_then_link_and_break_are_remembered(domain):
    _, pix = domain
    a, b, c = cx(new_id("A"), HOSP_A), cx(new_id("B"), HOSP_B), cx(new_id("C"), HOSP_B)
    # Same name and sex, birth date one digit off, nothing else: between 63 and 70 -> a person decides.
    assert ack(pix, adt("A01", a, family="Quigley", given="Dorothy", dob="19500607", sex="F", address="")) == "AA"
    assert ack(pix, adt("A01", b, family="Quigley", given="Dorothy", dob="19500617", sex="F", address="")) == "AA"
    assert query(pix, a, [HOSP_B])[1] == "NF"
    queue = json.load(urllib.request.urlopen(f"{pix.http}/review"))
    item = next(i for i in queue if i["identity_pid"] == b.split("^")[0])
    assert 63 <= item["score"] <= 70
    result = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "pix", "review", "link", str(item["id"]),
                             "--by", "dr.review"],
                            env=pix.env | {"XDSI_PIX_HTTP_PORT": pix.http.rsplit(":", 1)[1]},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert query(pix, a, [HOSP_B])[2] == [b]
    # An update of the linked identity keeps the person's decision.
    assert ack(pix, adt("A08", b, family="Quigley", given="Dot", dob="19500617", sex="F", address="")) == "AA"
    assert query(pix, a, [HOSP_B])[2] == [b]
    # The third identity: in the band too; broken, and still apart after an update.
    assert ack(pix, adt("A01", c, family="Quigly", given="Dorothy", dob="19500706", sex="F", address="")) == "AA"
    queue = json.load(urllib.request.urlopen(f"{pix.http}/review"))
    third = next((i for i in queue if i["identity_pid"] == c.split("^")[0]), None)
    if third is not None:
        req = urllib.request.Request(f"{pix.http}/review/{third['id']}/break", method="POST",
                                     data=b'{"by": "dr.review"}')
        assert json.load(urllib.request.urlopen(req))["result"].startswith("kept")
        assert ack(pix, adt("A08", c, family="Quigley", given="Dorothy", dob="19500706", sex="F", address="")) == "AA"
        decided = json.load(urllib.request.urlopen(f"{pix.http}/review?status=broken"))
        assert any(i["id"] == third["id"] and i["decided_by"] == TEST_TOKEN_NAME for i in decided)
    assert c not in query(pix, a)[2]


def test_different_patients_stay_apart(domain):
    _, pix = domain
    a, b = cx(new_id("A"), HOSP_A), cx(new_id("B"), HOSP_B)
    assert ack(pix, adt("A01", a, family="Zimmerman", given="Paul", dob="19800101")) == "AA"
    assert ack(pix, adt("A01", b, family="Zimmerman", given="Laura", dob="19830909", sex="F")) == "AA"
    assert query(pix, a, [HOSP_B])[1] == "NF"


def test_query_errors_point_at_the_field(domain):
    _, pix = domain
    code, _, _, reply = query(pix, cx("NOPE", HOSP_A))
    assert code == "AE" and "QPD^1^3^1^1" in reply and "204" in reply
    code, _, _, reply = query(pix, cx("X", "1.2.3.4.5.6.7"))
    assert code == "AE" and "QPD^1^3^1^4" in reply
    pid = cx(new_id(), HOSP_A)
    assert ack(pix, adt("A01", pid, family="Known", given="Only", dob="19990909")) == "AA"
    code, _, _, reply = query(pix, pid, ["9.9.9.9"])
    assert code == "AE" and "QPD^1^4^1" in reply


def test_affinity_id_forwarded_to_the_registry(domain):
    registry, pix = domain
    pid = cx(new_id(), HOSP_A)
    assert ack(pix, adt("A01", pid, family="Forward", given="Me", dob="19770707")) == "AA"
    affinity = affinity_id(query(pix, pid)[2])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = post(registry.url, envelope(ns.REGISTER, submission(affinity, [Doc()])))
        if r.response_status == "Success":
            break
        time.sleep(0.3)
    assert r.response_status == "Success", r.error_codes


def test_merge_forwards_a40_when_a_person_disappears(domain):
    registry, pix = domain
    keep, old = cx(new_id("K"), HOSP_A), cx(new_id("O"), HOSP_A)
    assert ack(pix, adt("A01", keep, family="Merger", given="Surviving", dob="19600101")) == "AA"
    assert ack(pix, adt("A01", old, family="Mergr", given="Subsumed", dob="19610202")) == "AA"
    old_affinity = affinity_id(query(pix, old)[2])
    keep_affinity = affinity_id(query(pix, keep)[2])
    assert ack(pix, adt("A40", keep, family="Merger", given="Surviving", dob="19600101", mrg=old)) == "AA"
    assert query(pix, old)[0] == "AE"
    with psycopg.connect(pix.database_url) as conn:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            row = conn.execute("SELECT merged_into FROM registry.patient WHERE id = %s", (old_affinity,)).fetchone()
            if row and row[0] == keep_affinity:
                break
            time.sleep(0.3)
    assert row and row[0] == keep_affinity


def test_bad_messages_get_errors_and_lose_nothing(domain):
    _, pix = domain
    pid = cx(new_id(), HOSP_A)
    assert ack(pix, adt("A01", pid, family="Keep", given="Me", dob="19700101")) == "AA"
    assert ack(pix, adt("A01", pid, dob="19700101", version="2.9")) == "AR"   # unsupported version
    assert ack(pix, adt("A01", pid).replace(b"ADT^A01", b"ORU^R01")) == "AR"
    assert ack(pix, adt("A01", pid).replace(b"|^~\\&|", b"|^~#&|")) == "AR"
    assert ack(pix, adt("A01", "NOAUTH")) == "AE"                         # no assigning authority
    assert ack(pix, adt("A01", "WARDID", facility="WARD")) == "AA"        # filled from the facility
    person = json.load(urllib.request.urlopen(f"{pix.http}/persons?domain={HOSP_A}&pid={pid.split('^')[0]}"))
    assert person["identities"][0]["demographics"]["birth_date"] == "19700101"


def test_registry_down_delays_forwarding_but_loses_nothing(new_database, tmp_path):
    from tests.services import free_port, start_pix, start_registry, wait_until
    database = new_database()
    feed_port = free_port()
    pix = start_pix(database, tmp_path, registry_feed=f"127.0.0.1:{feed_port}")
    try:
        pid = cx(new_id(), HOSP_A)
        assert ack(pix, adt("A01", pid, family="Patient", given="Waiting", dob="19900101")) == "AA"
        affinity = affinity_id(query(pix, pid)[2])
        time.sleep(1.5)                                      # a few delivery attempts fail
        registry = start_registry(database, tmp_path, feed_port=feed_port)
        try:
            with psycopg.connect(database, autocommit=True) as conn:
                wait_until(lambda: conn.execute("SELECT 1 FROM registry.patient WHERE id = %s",
                                                (affinity,)).fetchone(), 30, 0.3)
        finally:
            registry.stop()
    finally:
        pix.stop()


def test_feed_from_a_peer_nobody_here_wrote(domain, tmp_path):
    """python-hl7's ``mllp_send`` sends the feed."""
    _, pix = domain
    pid = cx(new_id(), HOSP_A)
    f = tmp_path / "adt.hl7"
    f.write_bytes(b"\x0b" + adt("A01", pid, family="Peer", given="Sent", dob="19850505") + b"\x1c\x0d")
    out = subprocess.run([str(Path(sys.executable).parent / "mllp_send"), "-p", str(pix.mllp[1]), "-f", str(f),
                          "127.0.0.1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "MSA|AA" in out.stdout, out.stdout + out.stderr
    assert query(pix, pid)[1] == "OK"
