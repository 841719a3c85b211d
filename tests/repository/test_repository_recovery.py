"""Recovery of unfinished submissions when the registry refuses to be asked about one of them: that
one is quarantined (left pending with its bytes, counted in the run record, logged) and the others
are settled. Before, the whole round was put off, every round."""
from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.request
import uuid

import psycopg

from tests.services import free_port, start_repository, wait_until

REFUSED = "1.2.3.4.99999"          # the uniqueId the registry will not be asked about
FAULT = ('<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault><env:Code>'
         '<env:Value>env:Receiver</env:Value></env:Code><env:Reason><env:Text xml:lang="en">refused for the test'
         '</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>').encode()


class RefusingProxy(http.server.ThreadingHTTPServer):
    """The real registry, except for requests naming ``REFUSED``: those get a SOAP Fault."""

    def __init__(self, registry_url: str):
        self.registry_url = registry_url
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if REFUSED.encode() in body:
                    status, kind, answer = 500, "application/soap+xml", FAULT
                else:
                    request = urllib.request.Request(proxy.registry_url, body, {"Content-Type": self.headers[
                        "Content-Type"]})
                    try:
                        with urllib.request.urlopen(request, timeout=30) as r:
                            status, kind, answer = r.status, r.headers["Content-Type"], r.read()
                    except urllib.error.HTTPError as e:
                        status, kind, answer = e.code, e.headers["Content-Type"], e.read()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/registry"


def test_a_submission_the_registry_will_not_be_asked_about_is_quarantined(domain, new_database, tmp_path,
                                                                         monkeypatch):
    registry, _ = domain
    monkeypatch.setenv("XDSI_WORKERS_CHECK_SECONDS", "0.2")
    proxy = RefusingProxy(registry.url)
    database = new_database()
    repo = start_repository(database, proxy.url, tmp_path, workers=1, recovery_seconds=1, pending_grace_seconds=0)
    try:
        settled = f"1.2.3.4.{uuid.uuid4().int % 10**12}"        # never registered: recovery forgets it
        with psycopg.connect(database, autocommit=True) as conn:
            for unique_id in (REFUSED, settled):
                conn.execute("INSERT INTO repository.document (unique_id, sha1, size, mime_type, state, owner, "
                             "created_at) VALUES (%s, %s, 1, 'text/plain', 'pending', 'elsewhere:1', "
                             "now() - interval '1 hour')", (unique_id, "0" * 40))

            def states():
                return dict(conn.execute("SELECT unique_id, state FROM repository.document").fetchall())
            assert wait_until(lambda: settled not in states(), 30)
            assert states() == {REFUSED: "pending"}

        def recovery():
            record = json.loads((tmp_path / "run" / "repository.json").read_text())
            return record.get("workers", {}).get("recovery")
        state = wait_until(lambda: (r := recovery()) and r["quarantined"] == 1 and r, 30)
        assert state["alive"]
        log = "\n".join(p.read_text() for p in tmp_path.glob("repository-*.log"))
        assert "pending submission quarantined" in log and REFUSED in log
    finally:
        repo.stop()
        proxy.shutdown()
