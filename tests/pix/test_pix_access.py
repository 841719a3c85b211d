"""Access control at the PIX manager's JSON door (issue 16): bearer tokens made by ``xdsi token``,
roles per endpoint, 401/403, ``by`` as the authenticated caller; curl as the outside client."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from affinity_domain import http_auth
from affinity_domain.tls import PeerIdentity
from affinity_domain.tokens import CACHE_SECONDS
from tests import hostile
from tests.pix.pixmsg import HOSP_A, ack, adt, cx, new_id
from tests.services import new_token


def curl_i(url: str, *args: str, token: str = "") -> tuple[int, str, bytes]:
    """(status, headers, body) of a request with ``token`` ("" : none)."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    done = subprocess.run(["curl", "-s", "-m", "10", "-D", "-", "-o", "-", *auth, *args, url],
                          capture_output=True, timeout=20)
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, head.decode("latin-1"), body


def xdsi(pix, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "affinity_domain.cli", *args], env=pix.env,
                          capture_output=True, text=True, timeout=120)


def test_a_request_without_credentials_gets_401_with_a_bearer_challenge(domain):
    _, pix = domain
    for path, method in (("/review", "GET"), ("/review/1", "GET"), (f"/persons?domain={HOSP_A}&pid=X", "GET"),
                         ("/review/1/link", "POST"), ("/persons/unlink", "POST")):
        status, head, body = curl_i(f"{pix.http}{path}", "-X", method, "--data-binary", "{}")
        assert status == 401, (path, status, body)
        assert "www-authenticate: bearer" in head.lower(), head
        assert "authenticate" in json.loads(body)["error"]


def test_an_unknown_token_gets_401_invalid_token(domain):
    _, pix = domain
    status, head, _ = curl_i(f"{pix.http}/review", token="xdsi_made-up")
    assert status == 401 and 'error="invalid_token"' in head, head
    status, _, _ = curl_i(f"{pix.http}/review", "-H", "Authorization: Basic dXNlcjpwYXNz")
    assert status == 401


def test_roles_decide_what_each_endpoint_allows(domain):
    _, pix = domain
    reader = new_token(pix.database_url, "reader.one", "reader")
    reviewer = new_token(pix.database_url, "reviewer.one", "reviewer")
    assert curl_i(f"{pix.http}/review", token=reader)[0] == 200
    status, _, body = curl_i(f"{pix.http}/review/999999/link", "-X", "POST", "--data-binary", "{}", token=reader)
    assert status == 403 and "reviewer" in json.loads(body)["error"], body
    status, _, body = curl_i(f"{pix.http}/persons/unlink", "-X", "POST", "--data-binary",
                             json.dumps({"domain": HOSP_A, "pid": "NOBODY"}), token=reader)
    assert status == 403, body
    # The reviewer passes the door: the item is then looked for (and is not there).
    assert curl_i(f"{pix.http}/review/999999/link", "-X", "POST", "--data-binary", "{}", token=reviewer)[0] == 404
    # A path no rule names needs the highest role.
    assert curl_i(f"{pix.http}/nowhere", token=reviewer)[0] == 403


def test_a_decision_is_the_authenticated_callers_not_the_bodys_by(domain):
    _, pix = domain
    a, b = cx(new_id("A"), HOSP_A), cx(new_id("B"), "1.2.840.9.7")
    assert ack(pix, adt("A01", a, family="Attributed", given="Ann", dob="19450312", sex="F", address="")) == "AA"
    assert ack(pix, adt("A01", b, family="Attributed", given="Ann", dob="19450313", sex="F", address="")) == "AA"
    reviewer = new_token(pix.database_url, "dr.real", "reviewer")
    queue = json.loads(hostile.curl(f"{pix.http}/review", token=reviewer)[1])
    item = next(i for i in queue if i["identity_pid"] == b.split("^")[0])
    status, _, body = curl_i(f"{pix.http}/review/{item['id']}/break", "-X", "POST", "--data-binary",
                             '{"by": "dr.fake"}', token=reviewer)
    assert status == 200, body
    detail = json.loads(hostile.curl(f"{pix.http}/review/{item['id']}", token=reviewer)[1])
    assert detail["decided_by"] == "dr.real"


def test_health_and_metrics_stay_open_and_hold_no_phi(domain):
    _, pix = domain
    pid = new_id("PHI")
    assert ack(pix, adt("A01", cx(pid, HOSP_A), family="Secretname", given="Hidden", dob="19330303")) == "AA"
    for path in ("/health", "/metrics"):
        status, _, body = curl_i(f"{pix.http}{path}")
        assert status == 200, path
        text = body.decode()
        assert pid not in text and "Secretname" not in text and "19330303" not in text


def test_xdsi_token_add_list_remove(domain):
    _, pix = domain
    added = xdsi(pix, "token", "add", "cli.reader", "--role", "reader")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("xdsi_") and len(token) > 40
    assert curl_i(f"{pix.http}/review", token=token)[0] == 200
    listed = xdsi(pix, "token", "list")
    assert "cli.reader" in listed.stdout and "reader" in listed.stdout and token not in listed.stdout
    again = xdsi(pix, "token", "add", "cli.reader", "--role", "operator")
    assert again.returncode != 0 and "exists" in again.stderr
    assert xdsi(pix, "token", "remove", "cli.reader").returncode == 0
    time.sleep(CACHE_SECONDS + 0.5)
    assert curl_i(f"{pix.http}/review", token=token)[0] == 401
    assert xdsi(pix, "token", "remove", "cli.reader").returncode == 1


def test_only_the_tokens_hash_is_stored(domain):
    import psycopg
    _, pix = domain
    token = new_token(pix.database_url, "hashed.one", "reader")
    with psycopg.connect(pix.database_url) as conn:
        rows = conn.execute("SELECT * FROM access.token WHERE name = 'hashed.one'").fetchall()
    assert rows and token not in repr(rows) and token.split("_", 1)[1] not in repr(rows)


def test_a_client_certificate_is_mapped_to_its_role():
    peer = PeerIdentity(common_name="alice", subject="CN=alice,O=Hospital", issuer="CN=CA", dns_names=(),
                        ip_addresses=(), uris=())
    subjects = {"CN=alice,O=Hospital": "reviewer"}
    who, _ = http_auth.identity({http_auth.PEER: peer}, lambda t: None, subjects)
    assert who is not None and who.name == "alice" and who.role == "reviewer" and who.by == "certificate"
    stranger = PeerIdentity(common_name="bob", subject="CN=bob,O=Hospital", issuer="CN=CA", dns_names=(),
                            ip_addresses=(), uris=())
    who, why = http_auth.identity({http_auth.PEER: stranger}, lambda t: None, subjects)
    assert who is None and "no role" in why
