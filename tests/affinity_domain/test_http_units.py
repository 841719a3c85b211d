"""The pure parts of the hardened doors: the JSON-door helper, MTOM's caps and Content-ID rules, the
outcome of an answer as metrics count it, and a health report across processes."""
import io
import json
import os
import time

import pytest
from lxml import etree

from affinity_domain import errors, health, metrics, mtom, ns, web
from affinity_domain.http_server import HttpLimits


def environ(body: bytes = b"", method: str = "POST", path: str = "/x", query: str = "", **extra):
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body), **extra}


def call(app, env):
    seen = {}
    body = b"".join(app(env, lambda status, headers: seen.update(status=status, headers=dict(headers))))
    return seen["status"], seen["headers"], json.loads(body)


def test_a_json_body_is_read_only_within_its_cap():
    class Unreadable(io.RawIOBase):
        def read(self, n=-1):
            raise AssertionError("the body was read")
    with pytest.raises(web.HttpError) as e:
        web.read_json(environ(CONTENT_LENGTH="1000000", **{"wsgi.input": Unreadable()}), 100)
    assert e.value.status.startswith("413")
    with pytest.raises(web.HttpError) as e:
        web.read_json(environ(**{web.BODY_REFUSED: 100}), 100)
    assert e.value.status.startswith("413")
    assert web.json_object(environ(b'{"a": 1}'), 100) == {"a": 1}
    assert web.json_object(environ(b""), 100, empty={}) == {}


@pytest.mark.parametrize("body,wanted", [(b"[]", "not a list"), (b'"x"', "not a string"), (b"{", "not JSON"),
                                         (b"\xff\xfe", "not UTF-8"), (b"", "send a JSON object")])
def test_a_body_that_is_not_an_object_says_why(body, wanted):
    with pytest.raises(web.HttpError) as e:
        web.json_object(environ(body), 100)
    assert e.value.status.startswith("400") and wanted in e.value.message


def test_fields_and_parameters_are_typed_and_free_of_control_characters():
    assert web.text({"a": "x"}, "a") == "x" and web.text({}, "a", default="d") == "d"
    for body, wanted in (({"a": 5}, "a must be a string, not a number"), ({"a": "x\x00"}, "control characters"),
                         ({}, "a is required"), ({"a": "x" * 2000}, "longer than")):
        with pytest.raises(web.HttpError) as e:
            web.text(body, "a", required=True)
        assert wanted in e.value.message
    assert web.texts({"m": ["CT", "MR"]}, "m") == ["CT", "MR"]
    with pytest.raises(web.HttpError):
        web.texts({"m": "CT"}, "m")
    assert web.query(environ(query="a=1&a=2&b=")) == {"a": "1", "b": ""}
    for q in ("a=%00", "a=%FF"):
        with pytest.raises(web.HttpError):
            web.query(environ(query=q))
    assert web.identifier("42", "id") == 42
    for bad in ("abc", "-1", "99999999999999999999", "٣"):
        with pytest.raises(web.HttpError):
            web.identifier(bad, "id")


def test_the_router_answers_404_405_with_allow_and_never_500_for_bad_input():
    router = web.Router("the guide")
    router.add("/things", "GET", lambda env: ("200 OK", []))
    router.add("/things", "POST", lambda env: ("201 Created", web.json_object(env, 100)))
    router.add(r"/things/([^/]+)", "GET", lambda env, thing: ("200 OK", {"id": web.identifier(thing, "thing")}))
    router.add("/broken", "GET", lambda env: 1 / 0)
    assert call(router, environ(method="GET", path="/things/7"))[2] == {"id": 7}
    status, headers, body = call(router, environ(method="DELETE", path="/things"))
    assert status.startswith("405") and headers["Allow"] == "GET, POST" and body["error"]
    status, _, body = call(router, environ(method="GET", path="/nowhere"))
    assert status.startswith("404") and body["see"] == "the guide"
    assert call(router, environ(b"[]", path="/things"))[0].startswith("400")
    assert call(router, environ(method="GET", path="/things/x"))[0].startswith("400")
    assert call(router, environ(method="GET", path="/things", **{web.BODY_REFUSED: 10}))[0].startswith("413")
    status, _, body = call(router, environ(method="GET", path="/broken"))     # our bug: 500, said plainly
    assert status.startswith("500") and "failed" in body["error"]


def test_http_limits_pick_the_path_limit():
    limits = HttpLimits(body_bytes=10, path_body_bytes={"/repository": 1000})
    assert (limits.body_limit("/repository"), limits.body_limit("/repository/"), limits.body_limit("/health")) == \
        (1000, 1000, 10)


def _multipart(parts: list[tuple[str, bytes]], extra_header: str = "") -> tuple[bytes, str]:
    out = b""
    for cid, data in parts:
        out += f"--b\r\nContent-ID: <{cid}>\r\n{extra_header}\r\n".encode() + data + b"\r\n"
    return out + b"--b--\r\n", 'multipart/related; boundary="b"; type="application/xop+xml"'


@pytest.mark.parametrize("parts,header,limits,wanted", [
    ([("root", b"<r/>"), ("a", b"1"), ("a", b"2")], "", {}, "two MIME parts have Content-ID <a>"),
    ([("root", b"<r/>"), ("root", b"2")], "", {}, "two MIME parts have Content-ID <root>"),
    ([("root", b"<r/>")] + [(f"p{n}", b"x") for n in range(5)], "", {"max_parts": 5}, "more than 5 MIME parts"),
    ([("root", b"<r/>"), ("a", b"1")], "X-Pad: " + "a" * 200 + "\r\n", {"max_header_bytes": 100}, "longer than 100"),
])
def test_both_mtom_readers_refuse_repeated_ids_and_what_is_over_their_caps(tmp_path, parts, header, limits, wanted):
    body, ctype = _multipart(parts, header)
    with pytest.raises(mtom.MtomError, match=wanted):
        mtom.read_multipart(io.BytesIO(body), ctype, tmp_path, len(body), **limits)
    assert list(tmp_path.iterdir()) == []        # nothing spooled is left
    with pytest.raises(mtom.MtomError, match=wanted):
        mtom.split(body, ctype, **limits)


def test_a_part_without_content_id_is_kept_under_a_key_nothing_can_name(tmp_path):
    body = b"--b\r\nContent-ID: <root>\r\n\r\n<r/>\r\n--b\r\nContent-Type: text/plain\r\n\r\nnameless\r\n--b--\r\n"
    message = mtom.read_multipart(io.BytesIO(body), 'multipart/related; boundary="b"', tmp_path, len(body))
    assert list(message.attachments) == ["<part 1>"]
    root = etree.fromstring(f'<r xmlns:xop="{ns.XOP}"><xop:Include href="cid:a"/></r>')
    assert mtom.unreferenced(root, ["a", "<part 1>"]) == ["<part 1>"]
    message.discard()


def test_outcomes_as_metrics_count_them():
    ok = errors.registry_response([])
    failed = errors.registry_response([errors.XdsError(errors.UNKNOWN_PATIENT_ID, "who?")])
    assert metrics.xds_outcome(ok) == ("success", "")
    assert metrics.xds_outcome(failed) == ("failure", "XDSUnknownPatientId")
    wrapped = etree.Element(f"{{{ns.XDSB}}}RetrieveDocumentSetResponse")
    wrapped.append(failed)
    assert metrics.xds_outcome(wrapped) == ("failure", "XDSUnknownPatientId")
    assert metrics.hl7_outcome(b"MSH|^~\\&|A|B|C|D|1||ACK|1|P|2.5\rMSA|AA|1\r") == ("success", "AA")
    assert metrics.hl7_outcome(b"MSH|^~\\&|A|B|C|D|1||ACK|1|P|2.5\rMSA|AE|1\rERR||PID^1^3|204^x^HL70357|E\r") == \
        ("failure", "AE/204")
    assert metrics.hl7_outcome(b"MSH|^~\\&|A|B|C|D|1||ACK|1|P|2.3.1\rMSA|AR|1\rERR|MSH^1^9^200&nope\r") == \
        ("failure", "AR/200")
    name = metrics.hl7_transaction({"QBP": "ITI-9", "ADT": "ITI-8"})
    assert name(b"MSH|^~\\&|A|B|C|D|1||QBP^Q23^QBP_Q21|1|P|2.5\r") == "ITI-9"
    assert name(b"garbage") == "HL7"


def test_health_is_unhealthy_when_a_worker_is_dead_a_probe_fails_or_a_process_is_silent(tmp_path):
    h = health.Health(tmp_path)
    h.register(lambda: {"indexer": {"alive": True, "queue": 3, "quarantined": 1, "restarts": 0}})
    assert h.report()["status"] == "ok"
    h.register(lambda: {"publisher": {"alive": False, "last_error": "boom"}})
    assert h.report()["problems"] == ["worker publisher of process main is not alive: boom"]

    def broken():
        raise RuntimeError("no database")
    other = health.Health(tmp_path, "worker-1")
    other.register(broken)
    other._publish()
    report = h.report()
    assert report["status"] == "unhealthy"
    assert any("the probe failed: no database" in p for p in report["problems"])
    stale = json.loads((tmp_path / "worker-1.json").read_text())
    stale["at"] = time.time() - 60
    (tmp_path / "worker-1.json").write_text(json.dumps(stale))
    assert any("process worker-1" in p and "has not reported" in p for p in h.report()["problems"])
    h.expected = {"main", "worker-1", "worker-2"}
    assert "process worker-2 has not reported" in h.report()["problems"]


def test_probes_feed_the_gauges():
    h = health.Health(None)
    h.register(lambda: {"indexer": {"alive": True, "queue": 3, "quarantined": 2, "restarts": 1, "last_error": "x"}})
    text = metrics.exposition(h).decode()
    for line in ('xdsi_queue_depth{process="main",worker="indexer"} 3.0',
                 'xdsi_quarantined_items{process="main",worker="indexer"} 2.0',
                 'xdsi_worker_restarts{process="main",worker="indexer"} 1.0',
                 'xdsi_worker_alive{process="main",worker="indexer"} 1.0', "xdsi_healthy 1.0"):
        assert line in text
    assert f'process="{os.getpid()}"' not in text        # the process label is its role: bounded labels
