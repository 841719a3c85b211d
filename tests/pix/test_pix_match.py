"""The dry-run match (``POST /match``, ``xdsi pix match``) against a real PIX manager and PostgreSQL:
candidates with scores and explanations, and nothing registered."""
import json
import subprocess
import sys
import urllib.error
import urllib.request

import psycopg
import pytest

from tests.pix.pixmsg import HOSP_A, HOSP_B, ack, adt, cx, new_id

TABLES = ("identity", "enterprise", "review_item", "decision", "outbox", "domain")


def counts(pix) -> dict[str, int]:
    with psycopg.connect(pix.database_url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM pix.{t}").fetchone()[0] for t in TABLES}


def match(pix, body: dict) -> dict:
    request = urllib.request.Request(f"{pix.http}/match", method="POST", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)


def test_a_dry_run_scores_and_explains_the_candidates_and_registers_nothing(domain):
    _, pix = domain
    family, pid, other = "Dryrun" + new_id(""), new_id("A"), new_id("Z")
    assert ack(pix, adt("A01", cx(pid, HOSP_A), family=family, given="Matilda", dob="19660606", sex="F",
                        phone="4165550123")) == "AA"
    assert ack(pix, adt("A01", cx(other, HOSP_A), family=family, given="Matilda", dob="19811123", sex="F")) == "AA"
    before = counts(pix)
    found = match(pix, {"family": family, "given": "Matilda", "birth_date": "1966-06-06", "sex": "F",
                        "postal_code": "44130", "domain": HOSP_B})
    assert found["action"] == "link" and found["demographics"]["birth_date"] == "19660606"
    best, second = found["candidates"][:2]
    assert (best["pid"], best["domain"], best["band"]) == (pid, HOSP_A, "link") and best["score"] > 70
    assert "family" in best["explanation"] and best["parts"]["birth_date"] > 0 and best["person"]
    assert second["pid"] == other and second["score"] < best["score"] and second["parts"]["birth_date"] < 0
    # As a HOSP_A identity it would be a person of its own: the feed never links within one domain.
    assert match(pix, {"family": family, "given": "Matilda", "birth_date": "19660606", "domain": HOSP_A})[
        "action"] == "new"
    out = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "pix", "match", "--family", family,
                          "--given", "Matilda", "--dob", "19660606", "--sex", "F", "--domain", HOSP_B],
                         env=pix.env | {"XDSI_PIX_HTTP_PORT": pix.http.rsplit(":", 1)[1]},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "would be: link" in out.stdout and pid in out.stdout, out.stdout + out.stderr
    assert "family exact +" in out.stdout
    assert counts(pix) == before


@pytest.mark.parametrize("body", [{}, {"family": "X", "limit": 0}, {"family": 7}, {"family": "X", "limit": True}])
def test_a_dry_run_without_a_usable_question_is_a_400(domain, body):
    _, pix = domain
    with pytest.raises(urllib.error.HTTPError) as e:
        match(pix, body)
    assert e.value.code == 400 and json.load(e.value)["error"]


def test_a_break_is_a_do_not_link_pair_no_later_update_re_links(domain):
    _, pix = domain
    a, b, d = new_id("A"), new_id("B"), new_id("D")
    same = dict(family="Breaker" + new_id(""), given="Ophelia", dob="19580808", sex="F",
                address="3 Elm St^^Guelph^ON^N1H2K5")
    phone = "519" + new_id("")[:7]
    assert ack(pix, adt("A01", cx(a, HOSP_A), **same)) == "AA"
    assert ack(pix, adt("A01", cx(b, HOSP_B), **same, phone=phone)) == "AA"           # linked with a
    request = urllib.request.Request(f"{pix.http}/persons/unlink", method="POST",
                                     data=json.dumps({"domain": HOSP_B, "pid": b, "by": "dr.break"}).encode())
    assert json.load(urllib.request.urlopen(request))["result"].startswith("unlinked")
    assert ack(pix, adt("A01", cx(d, "1.2.840.9.7"), **same, phone=phone)) == "AA"     # joins b's person
    # b's own record changes so much that a no longer meets it in any block; then a is updated, and
    # its best candidate is d, in b's person: the remembered break still keeps a out of it.
    assert ack(pix, adt("A08", cx(b, HOSP_B), family="Renamed", given="Entirely", dob="19010101", sex="F",
                        address="")) == "AA"
    assert ack(pix, adt("A08", cx(a, HOSP_A), **same, phone=phone)) == "AA"
    with_b = {i["pid"] for i in json.load(urllib.request.urlopen(
        f"{pix.http}/persons?domain={HOSP_B}&pid={b}"))["identities"]}
    assert d in with_b and a not in with_b, with_b
