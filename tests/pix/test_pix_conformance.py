"""The PIX manager against the ITI TF-2a / HL7 v2.5 rules that replayed conformance messages broke,
one test per rule, over real MLLP against real PostgreSQL (python-hl7's ``mllp_send`` as one peer)."""
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.pix.pixmsg import DOMAIN, HOSP_A, HOSP_B, adt, cx, fields, new_id, qbp, query
from tests.services import Hl7Receiver, start_pix
from tests.xds import mllp_send

WARD = "1.2.840.9.7"


def kate() -> dict:
    """Demographics that link across domains, of someone no other test feeds."""
    unique = new_id("")
    return dict(family="Abernathy" + unique, given="Katherine", dob="19720314", sex="F",
                address="12 Oak St^^Toronto^ON^M5V2T6", phone="416" + unique[:7])


def segments(reply: str, name: str) -> list[list[str]]:
    return [s.split("|") for s in reply.split("\r") if s.startswith(name + "|")]


def send(pix, message: bytes) -> tuple[str, str]:
    reply = mllp_send(pix.mllp, message)
    return fields(reply, "MSA")[1], reply


def person(pix, domain: str, pid: str) -> dict | None:
    try:
        return json.load(urllib.request.urlopen(f"{pix.http}/persons?domain={domain}&pid={pid}"))
    except urllib.error.HTTPError as e:
        assert e.code == 404
        return None


def keys(ids: list[str]) -> set[tuple[str, str]]:
    """(id, OID) of each returned CX."""
    return {(i.split("^")[0], i.split("^")[3].split("&")[1]) for i in ids}


def with_version(message: bytes, version: str) -> bytes:
    msh, rest = message.split(b"\r", 1)
    parts = msh.split(b"|")
    parts[11] = version.encode()
    return b"|".join(parts) + b"\r" + rest


# ---------------------------------------------------------------- open domains (the module's default PIX)

def test_query_never_returns_the_queried_id_even_with_a_namespace(domain):
    _, pix = domain
    a, b = new_id("A"), new_id("B")
    same = kate()
    assert send(pix, adt("A01", cx(a, HOSP_A), **same))[0] == "AA"
    assert send(pix, adt("A01", cx(b, HOSP_B), **same))[0] == "AA"
    for asked in (f"{a}^^^HIMSS2005&{HOSP_A}&ISO", f"{a}^^^&{HOSP_A}&ISO"):
        code, status, ids, _ = query(pix, asked)
        assert (code, status) == ("AA", "OK")
        assert (a, HOSP_A) not in keys(ids) and (b, HOSP_B) in keys(ids), ids


def test_a40_moves_every_cross_reference_of_the_subsumed_id_to_the_surviving_one(domain):
    _, pix = domain
    old, b, keep = new_id("O"), new_id("B"), new_id("K")
    same = kate()
    assert send(pix, adt("A01", cx(old, HOSP_A), **same))[0] == "AA"
    assert send(pix, adt("A01", cx(b, HOSP_B), **same))[0] == "AA"         # linked with ``old``
    assert (b, HOSP_B) in keys(query(pix, cx(old, HOSP_A))[2])
    assert send(pix, adt("A01", cx(keep, HOSP_A), family="Survivor", given="Kept", dob="19500101"))[0] == "AA"
    surviving_affinity = {k for k in keys(query(pix, cx(keep, HOSP_A))[2]) if k[1] == DOMAIN}
    assert send(pix, adt("A40", cx(keep, HOSP_A), family="Survivor", given="Kept", dob="19500101",
                         mrg=cx(old, HOSP_A)))[0] == "AA"
    code, status, ids, _ = query(pix, cx(b, HOSP_B))
    assert (code, status) == ("AA", "OK") and (keep, HOSP_A) in keys(ids), ids
    assert (old, HOSP_A) not in keys(ids) and {k for k in keys(ids) if k[1] == DOMAIN} == surviving_affinity
    assert (b, HOSP_B) in keys(query(pix, cx(keep, HOSP_A))[2])
    assert query(pix, cx(old, HOSP_A))[0] == "AE"


def test_an_unsupported_version_is_rejected_with_203(domain, tmp_path):
    _, pix = domain
    pid = cx(new_id(), HOSP_A)
    for version in ("2.7", "2.4", "3.0"):
        code, reply = send(pix, adt("A01", pid, version=version))
        err = segments(reply, "ERR")[0]
        assert code == "AR" and err[2] == "MSH^1^12" and err[3].split("^")[0] == "203", reply
    assert person(pix, HOSP_A, pid.split("^")[0]) is None
    code, reply = send(pix, with_version(qbp(pid), "2.3.1"))        # QBP has no v2.3.1 form
    assert code == "AR" and segments(reply, "ERR")[0][3].startswith("203^"), reply
    code, reply = send(pix, with_version(adt("A01", pid), ""))
    assert code == "AR" and segments(reply, "ERR")[0][2] == "MSH^1^12", reply
    # The versions the profile's peers send are read: ITI-8 in 2.3.1, 2.5 and 2.5.1, ITI-9 in 2.5.x.
    for version in ("2.3.1", "2.5", "2.5.1"):
        assert send(pix, adt("A08", pid, version=version))[0] == "AA"
    assert send(pix, with_version(qbp(pid), "2.5.1"))[0] == "AA"
    # The same rejection to a peer nobody here wrote.
    f = tmp_path / "adt.hl7"
    f.write_bytes(b"\x0b" + adt("A01", cx(new_id(), HOSP_A), version="2.6") + b"\x1c\x0d")
    out = subprocess.run([str(Path(sys.executable).parent / "mllp_send"), "-p", str(pix.mllp[1]), "-f", str(f),
                          "127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "MSA|AR" in out.stdout and "|203^" in out.stdout, out.stdout + out.stderr


def test_the_explicit_null_is_never_stored_as_a_value(domain):
    _, pix = domain
    for pid3 in (f'""^^^&{HOSP_A}&ISO', '""'):
        code, reply = send(pix, adt("A01", pid3))
        assert code == "AE" and segments(reply, "ERR")[0][3].startswith("101^"), reply
    assert person(pix, HOSP_A, '""') is None
    pid = new_id()
    assert send(pix, adt("A01", cx(pid, HOSP_A), family="Null", given="Clears", sex="F", phone="4165550199"))[0] == "AA"
    assert send(pix, adt("A08", cx(pid, HOSP_A), family="Null", given="Clears", sex='""', phone='""',
                         address='""'))[0] == "AA"
    stored = person(pix, HOSP_A, pid)["identities"][0]["demographics"]
    assert (stored["sex"], stored["phone"], stored["street"], stored["family"]) == ("", "", "", "NULL")


def test_an_incomplete_assigning_authority_is_refused_on_its_field(domain):
    _, pix = domain
    good, bad = cx(new_id("G"), HOSP_B), new_id("H")
    for pid3, where in ((f"{bad}^^^&1.2.3", "PID^1^3^1^4"), (f"{bad}^^^NS&&ISO", "PID^1^3^1^4"),
                        (f"{good}~{bad}^^^HOSP&{HOSP_A}", "PID^1^3^2^4")):
        code, reply = send(pix, adt("A01", pid3))
        err = segments(reply, "ERR")[0]
        assert code == "AE" and err[2] == where and err[3].split("^")[0] == "102", reply
    assert person(pix, "1.2.3", bad) is None and person(pix, HOSP_B, good.split("^")[0]) is None
    code, reply = send(pix, qbp(f"{bad}^^^&{HOSP_A}"))
    assert code == "AE" and segments(reply, "ERR")[0][2] == "QPD^1^3^1^4", reply


def test_every_id_of_one_pid3_is_registered_for_the_same_person(domain):
    _, pix = domain
    a, b, w = new_id("A"), new_id("B"), new_id("W")
    # Too little to match on: only the source's saying so links them.
    pid3 = "~".join([cx(a, HOSP_A), cx(b, HOSP_B), f"{w}^^^WARD&{WARD}&ISO"])
    assert send(pix, adt("A01", pid3, family="Solo", given="", dob="", sex="", address=""))[0] == "AA"
    everyone = {(a, HOSP_A), (b, HOSP_B), (w, WARD)}
    affinity = None
    for me in everyone:
        code, status, ids, _ = query(pix, cx(*me))
        assert (code, status) == ("AA", "OK"), me
        mine = {k for k in keys(ids) if k[1] == DOMAIN}
        assert keys(ids) - mine == everyone - {me} and len(mine) == 1
        affinity = affinity or mine
        assert mine == affinity
    # A second message naming a known id and a new one: the new one joins the known person.
    c = new_id("C")
    assert send(pix, adt("A08", "~".join([cx(c, "1.2.840.9.8"), cx(a, HOSP_A)]), family="Solo", given="",
                         dob="", sex="", address=""))[0] == "AA"
    assert keys(query(pix, cx(c, "1.2.840.9.8"))[2]) == everyone | affinity


def test_reduced_precision_and_impossible_birth_dates_lose_no_identity(domain):
    _, pix = domain
    for dob, stored in (("1980", "1980"), ("198005", "198005"), ("19800515", "19800515"),
                        ("198005151230+0100", "19800515")):
        pid = new_id()
        code, reply = send(pix, adt("A01", cx(pid, HOSP_A), family="Precise", given=dob, dob=dob))
        assert code == "AA" and not segments(reply, "ERR"), reply
        assert person(pix, HOSP_A, pid)["identities"][0]["demographics"]["birth_date"] == stored
    for version in ("2.5", "2.3.1"):
        pid = new_id()
        code, reply = send(pix, adt("A01", cx(pid, HOSP_A), family="Typo", given="Date", dob="19450493",
                                    version=version))
        err = segments(reply, "ERR")
        assert code == "AA" and len(err) == 1, reply
        assert err[0][2] == "PID^1^7" and err[0][3].split("^")[0] == "102" and err[0][4] == "W", reply
        if version == "2.3.1":                 # and ERR-1 for a 2.3.1 reader
            assert err[0][1].startswith("PID^1^7^102&"), reply
        assert person(pix, HOSP_A, pid)["identities"][0]["demographics"]["birth_date"] == ""


# ---------------------------------------------------------------- domains configured with namespaces

@pytest.fixture(scope="module")
def named(new_database, tmp_path_factory):
    """A PIX manager whose domains are configured as NS&OID&ISO, notifying an ITI-10 subscriber."""
    receiver = Hl7Receiver()
    domains = [f"HIMSS2005&{HOSP_A}&ISO", HOSP_B, f"XDSI&{DOMAIN}&ISO"]
    pix = start_pix(new_database(), tmp_path_factory.mktemp("pix-named"), registry_feed="",
                    domains=json.dumps(domains), subscribers=f'["127.0.0.1:{receiver.port}"]')
    yield pix, receiver
    pix.stop()
    receiver.stop()


def test_a_namespace_alone_names_its_configured_domain(named):
    pix, _ = named
    pid = new_id("N")
    assert send(pix, adt("A01", f"{pid}^^^HIMSS2005", family="Namespace", given="Only", dob="19610101"))[0] == "AA"
    assert person(pix, HOSP_A, pid) is not None
    for asked in (f"{pid}^^^HIMSS2005", cx(pid, HOSP_A)):
        code, status, ids, _ = query(pix, asked)
        assert (code, status) == ("AA", "OK") and (pid, HOSP_A) not in keys(ids), ids
    wanted = qbp(cx(pid, HOSP_A), [DOMAIN]).replace(f"|^^^&{DOMAIN}&ISO".encode(), b"|^^^XDSI")   # QPD-4 too
    code, reply = send(pix, wanted)
    assert code == "AA" and len(fields(reply, "PID")[3].split("~")) == 1 and f"^^^XDSI&{DOMAIN}&ISO" in reply
    code, reply = send(pix, adt("A01", f"{new_id()}^^^NOSUCH"))
    assert code == "AE" and segments(reply, "ERR")[0][3].startswith("204^"), reply


def test_returned_ids_carry_the_authority_as_configured(named):
    pix, receiver = named
    a, b = new_id("A"), new_id("B")
    same = kate()
    assert send(pix, adt("A01", cx(a, HOSP_A), **same))[0] == "AA"
    assert send(pix, adt("A01", cx(b, HOSP_B), **same))[0] == "AA"
    code, status, ids, _ = query(pix, cx(b, HOSP_B))
    assert (code, status) == ("AA", "OK")
    assert f"{a}^^^HIMSS2005&{HOSP_A}&ISO" in ids, ids
    assert any(i.endswith(f"^^^XDSI&{DOMAIN}&ISO") for i in ids), ids
    code, status, ids, _ = query(pix, cx(a, HOSP_A))
    assert f"{b}^^^&{HOSP_B}&ISO" in ids, ids                        # no namespace configured: none sent
    a31 = receiver.wait_for(lambda m: "ADT^A31" in m and f"{a}^^^" in m and f"{b}^^^" in m)
    pid3 = fields(a31, "PID")[3].split("~")
    assert f"{a}^^^HIMSS2005&{HOSP_A}&ISO" in pid3 and any(i.endswith(f"^^^XDSI&{DOMAIN}&ISO") for i in pid3)
