"""Bad input at the registry's doors: each gets a clear SOAP fault or ACK, and the service keeps serving."""
import os
import signal
import socket
import time

import psycopg

from affinity_domain import ns
from tests.xds import (APPROVED, FIND_DOCUMENTS, NS, Doc, ack_code, adt, envelope, feed, mllp_send,
                 new_patient, post, stored_query, submission)


def fault(reply):
    f = reply.root.find("s:Body/s:Fault", NS)
    assert f is not None, reply.body
    return (f.findtext("s:Code/s:Value", namespaces=NS), f.findtext("s:Code/s:Subcode/s:Value", namespaces=NS),
            f.findtext("s:Reason/s:Text", namespaces=NS))


def still_serving(registry):
    pid = new_patient()
    feed(registry, pid)
    r = post(registry.url, envelope(ns.REGISTER, submission(pid, [Doc()])))
    assert r.response_status == "Success"


def test_malformed_xml(registry):
    r = post(registry.url, envelope(ns.REGISTER, "<lcm:SubmitObjectsRequest")[:-30])
    assert r.status == 400 and fault(r)[0] == "soapenv:Sender"
    still_serving(registry)


def test_billion_laughs_is_refused_without_expansion(registry):
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
                      for i in range(1, 10))
            + ']><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&lol9;</s:Body></s:Envelope>')
    started = time.monotonic()
    r = post(registry.url, bomb.encode())
    assert r.status == 400 and "DOCTYPE" in fault(r)[2]
    assert time.monotonic() - started < 5
    still_serving(registry)


def test_external_entity_is_not_fetched(registry, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>'
           f'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x>&xxe;</x></s:Body></s:Envelope>')
    r = post(registry.url, xxe.encode())
    assert r.status == 400 and b"TOP-SECRET" not in r.body


def test_oversized_body(registry):
    body = envelope(ns.REGISTER, "<x>" + "a" * (21 * 1024 * 1024) + "</x>")
    r = post(registry.url, body)
    assert r.status == 413 and fault(r)[0] == "soapenv:Sender"
    still_serving(registry)


def test_unknown_action(registry):
    r = post(registry.url, envelope("urn:ihe:iti:2007:NoSuchThing", "<x/>"))
    assert r.status == 400 and fault(r)[1] == "wsa:ActionNotSupported"
    assert r.action == "http://www.w3.org/2005/08/addressing/fault"


def test_soap_1_1_envelope(registry):
    body = (b'<?xml version="1.0"?><e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>'
            b'<x/></e:Body></e:Envelope>')
    r = post(registry.url, body, "text/xml; charset=UTF-8")
    assert r.status == 400 and fault(r)[0] == "soapenv:VersionMismatch"


def test_truncated_mtom(registry):
    payload = envelope(ns.REGISTER, "<x/>")
    body = (b'--b1\r\nContent-Type: application/xop+xml; type="application/soap+xml"\r\nContent-ID: <root>\r\n\r\n'
            + payload)  # the closing boundary never comes
    r = post(registry.url, body, 'multipart/related; boundary="b1"; type="application/xop+xml"; start="<root>"')
    assert r.status == 400 and "truncated" in fault(r)[2]


def test_missing_action_header(registry):
    body = (b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
            b'<x/></s:Body></s:Envelope>')
    r = post(registry.url, body)
    assert r.status == 400 and fault(r)[1] == "wsa:MessageAddressingHeaderRequired"


def test_wrong_body_for_action(registry):
    r = post(registry.url, envelope(ns.REGISTER, stored_query(FIND_DOCUMENTS, {})))
    assert r.status == 400


# ---------------------------------------------------------------- ITI-8 feed

def test_feed_rejects_non_adt(registry):
    msg = adt("A01", new_patient()).replace(b"ADT^A01^ADT_A01", b"ORM^O01^ORM_O01")
    assert ack_code(mllp_send(registry.feed, msg)) == "AR"


def test_feed_without_domain_identifier_is_an_error_with_err(registry):
    ack = mllp_send(registry.feed, adt("A01", "X1^^^&1.2.3&ISO"))
    assert ack_code(ack) == "AE" and "\rERR|" in ack and "204" in ack


def test_feed_garbage_between_frames_and_unparsable_message(registry):
    pid = new_patient()
    with socket.create_connection(registry.feed, timeout=10) as s:
        s.sendall(b"garbage before\x0bNOT HL7 AT ALL\x1c\x0dmore garbage\x0b" + adt("A01", pid) + b"\x1c\x0d")
        data = b""
        while data.count(b"\x1c\x0d") < 2:
            data += s.recv(65536)
    acks = [a.strip(b"\x0b").decode() for a in data.split(b"\x1c\x0d") if a.strip()]
    assert [ack_code(a) for a in acks] == ["AR", "AA"]


def test_feed_dropped_connection_mid_message_then_serves(registry):
    with socket.create_connection(registry.feed, timeout=10) as s:
        s.sendall(b"\x0b" + adt("A01", new_patient())[:40])
    pid = new_patient()
    assert ack_code(mllp_send(registry.feed, adt("A01", pid))) == "AA"


def test_merge_makes_subsumed_documents_findable_under_the_survivor(registry):
    survivor, subsumed = new_patient(), new_patient()
    feed(registry, survivor)
    feed(registry, subsumed)
    doc = Doc()
    assert post(registry.url, envelope(ns.REGISTER, submission(subsumed, [doc]))).response_status == "Success"
    ack = mllp_send(registry.feed, adt("A40", survivor, mrg=subsumed))
    assert ack_code(ack) == "AA", ack
    q = post(registry.url, envelope(ns.STORED_QUERY, stored_query(FIND_DOCUMENTS, {
        "$XDSDocumentEntryPatientId": f"'{survivor}'", "$XDSDocumentEntryStatus": f"('{APPROVED}')"})))
    [entry] = q.objects("ExtrinsicObject")
    pid_value = [e.get("value") for e in entry.iterfind("{*}ExternalIdentifier")
                 if e.get("identificationScheme") == "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"]
    assert pid_value == [survivor]
    r = post(registry.url, envelope(ns.REGISTER, submission(subsumed, [Doc()])))
    assert r.error_codes == ["XDSUnknownPatientId"]


def test_database_connections_killed_mid_service(registry):
    """The pool lends no connection the server has closed: the requests after it succeed."""
    pid = new_patient()
    feed(registry, pid)
    for _ in range(2):
        with psycopg.connect(registry.database_url, autocommit=True) as conn:
            killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        assert killed >= 1
        time.sleep(0.2)       # the backends' goodbyes reach the pooled sockets
        r = post(registry.url, envelope(ns.REGISTER, submission(pid, [Doc()])))
        assert r.status == 200 and r.response_status == "Success", r.error_codes
    still_serving(registry)


def test_kill_9_during_registrations_leaves_whole_submissions(new_database, tmp_path):
    """Submissions of three documents each, registry killed with SIGKILL mid-stream: on restart
    every submission set has all three documents or is absent."""
    from tests.services import start_registry
    import threading
    url = new_database()
    service = start_registry(url, tmp_path)
    pid = new_patient()
    feed(service, pid)
    stop = threading.Event()

    def stream():
        while not stop.is_set():
            try:
                post(service.url, envelope(ns.REGISTER, submission(pid, [Doc(id=f"D{i}") for i in range(3)])),
                     timeout=5)
            except OSError:
                return

    workers = [threading.Thread(target=stream) for _ in range(3)]
    for w in workers:
        w.start()
    time.sleep(2.0)
    os.kill(service.process.pid, signal.SIGKILL)
    service.process.wait()
    stop.set()
    for w in workers:
        w.join()
    with psycopg.connect(url, options="-c search_path=registry") as conn:
        counts = [n for (n,) in conn.execute(
            "SELECT count(d.id) FROM submission_set s LEFT JOIN document_entry d ON d.submission_set = s.id "
            "GROUP BY s.id")]
        orphans = conn.execute("SELECT count(*) FROM document_entry d WHERE NOT EXISTS "
                               "(SELECT 1 FROM submission_set s WHERE s.id = d.submission_set)").fetchone()[0]
    assert counts and set(counts) == {3} and orphans == 0
    restarted = start_registry(url, tmp_path)
    try:
        still_serving(restarted)
    finally:
        restarted.stop()
