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
    found = match(pix, {"family": family, "given": "Matilda", "birth_date": "1966-06-06", "sex": "F", "postal_code": "44130",
                        "domain": HOSP_B})
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
    assert "family +" in out.stdout
    assert counts(pix) == before


@pytest.mark.parametrize("body", [{}, {"family": "X", "limit": 0}, {"family": 7}, {"family": "X", "limit": True}])
def test_a_dry_run_without_a_usable_question_is_a_400(domain, body):
    _, pix = domain
    with pytest.raises(urllib.error.HTTPError) as e:
        match(pix, body)
    assert e.value.code == 400 and json.load(e.value)["error"]
