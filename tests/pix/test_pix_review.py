"""Review beyond the queue: inspecting an item (HTTP and ``xdsi pix review show``), and undoing a wrong
auto-link (``xdsi pix unlink``), remembered against later updates, forwarded and notified."""
import json
import subprocess
import sys
import urllib.error
import urllib.request

import psycopg
import pytest

from tests.pix.pixmsg import DOMAIN, HOSP_A, HOSP_B, ack, adt, cx, new_id, query
from tests.services import new_token, wait_until


def cli(pix, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = pix.env if token is None else {**pix.env, "XDSI_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "affinity_domain.cli", "pix", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, method="POST", data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def affinity(ids: list[str]) -> str:
    return next(i for i in ids if DOMAIN in i)


def test_a_review_item_can_be_inspected_and_shows_who_decided(domain):
    _, pix = domain
    a, b = cx(new_id("A"), HOSP_A), cx(new_id("B"), HOSP_B)
    assert ack(pix, adt("A01", a, family="Inspector", given="Gadget", dob="19450312", sex="M", address="")) == "AA"
    assert ack(pix, adt("A01", b, family="Inspector", given="Gadget", dob="19450313", sex="M", address="")) == "AA"
    queue = json.load(urllib.request.urlopen(f"{pix.http}/review"))
    item = next(i for i in queue if i["identity_pid"] == b.split("^")[0])
    detail = json.load(urllib.request.urlopen(f"{pix.http}/review/{item['id']}"))
    assert detail["identity_demographics"]["birth_date"] == "19450313"
    assert detail["candidate_demographics"]["birth_date"] == "19450312"
    assert "birth_date" in detail["explanation"] and detail["identity_person"] != detail["candidate_person"]
    shown = cli(pix, "review", "show", str(item["id"]))
    assert shown.returncode == 0 and "19450313" in shown.stdout and "19450312" in shown.stdout, shown.stderr
    # The decision is the token holder's (xdsi token add nurse.kim --role reviewer).
    nurse = new_token(pix.database_url, f"nurse.kim.{item['id']}", "reviewer")
    assert cli(pix, "review", "break", str(item["id"]), token=nurse).returncode == 0
    detail = json.load(urllib.request.urlopen(f"{pix.http}/review/{item['id']}"))
    assert detail["status"] == "broken" and detail["decided_by"] == f"nurse.kim.{item['id']}" and detail["decided_at"]
    assert detail["decisions"][0]["verdict"] == "break"
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{pix.http}/review/999999")
    assert missing.value.code == 404


def test_a_wrong_auto_link_is_undone_and_stays_undone(domain, subscriber):
    registry, pix = domain
    a, b = cx(new_id("A"), HOSP_A), cx(new_id("B"), HOSP_B)
    twin = dict(family="Lookalike", given="Sam", dob="19910909", sex="M", address="5 Elm St^^Oshawa^ON^L1H1A1")
    assert ack(pix, adt("A01", a, **twin)) == "AA"
    assert ack(pix, adt("A01", b, **twin)) == "AA"
    assert query(pix, a, [HOSP_B])[2] == [b]          # the scorecard linked them
    shared = affinity(query(pix, a)[2])

    doctor = f"dr.who.{b.split('^')[0].lower()}"
    done = cli(pix, "unlink", HOSP_B, b.split("^")[0], token=new_token(pix.database_url, doctor, "reviewer"))
    assert done.returncode == 0 and "unlinked" in done.stdout, done.stdout + done.stderr
    assert query(pix, a, [HOSP_B])[1] == "NF"
    own = affinity(query(pix, b)[2])
    assert own != shared and affinity(query(pix, a)[2]) == shared
    person = json.load(urllib.request.urlopen(f"{pix.http}/persons?domain={HOSP_B}&pid={b.split('^')[0]}"))
    assert person["identities"][0]["linked_by"] == f"person:{doctor}"

    # Later updates of either side, even identical, do not undo the person's decision.
    assert ack(pix, adt("A08", b, **twin)) == "AA"
    assert ack(pix, adt("A08", a, **twin)) == "AA"
    assert query(pix, a, [HOSP_B])[1] == "NF" and query(pix, b, [HOSP_A])[1] == "NF"

    # The registry learns the new affinity id; subscribers hear both persons' new cross-references.
    subscriber.wait_for(lambda m: "ADT^A31" in m and b in m and own in m and a not in m)
    with psycopg.connect(registry.database_url, autocommit=True) as conn:
        wait_until(lambda: conn.execute("SELECT 1 FROM registry.patient WHERE id = %s", (own,)).fetchone(), 15, 0.3)


def test_unlink_needs_a_known_identity_and_is_the_callers(domain):
    _, pix = domain
    assert post(f"{pix.http}/persons/unlink", {"domain": HOSP_A})[0] == 400
    assert post(f"{pix.http}/persons/unlink", {"domain": HOSP_A, "pid": "NOBODY", "by": "x"})[0] == 404
    lonely = cx(new_id(), HOSP_A)
    assert ack(pix, adt("A01", lonely, family="Nobody", given="Else", dob="19220202")) == "AA"
    status, body = post(f"{pix.http}/persons/unlink", {"domain": HOSP_A, "pid": lonely.split("^")[0],
                                                        "by": "mallory"})
    assert status == 200 and "nobody" in body["result"]
    person = json.load(urllib.request.urlopen(f"{pix.http}/persons?domain={HOSP_A}&pid={lonely.split('^')[0]}"))
    assert "mallory" not in json.dumps(person)          # "by" in the body is not who decided
