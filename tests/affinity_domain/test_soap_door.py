"""The SOAP door's two pure steps (read_request, reply) and its WSGI adapter, over WSGI environs."""
import io

from lxml import etree

from affinity_domain import mtom, ns, soap
from affinity_domain.soap_door import Limits, Reply, Route, SoapDoor, read_request, reply

NS = "urn:example:echo"
ACTION = "urn:example:Echo"
REQUEST = f"{{{NS}}}EchoRequest"


def envelope_bytes(action: str = ACTION, body: str = f'<e:EchoRequest xmlns:e="{NS}">hi</e:EchoRequest>',
                   header: str = "") -> bytes:
    return (f'<s:Envelope xmlns:s="{ns.SOAP12}" xmlns:a="{ns.WSA}"><s:Header><a:Action>{action}</a:Action>'
            f'<a:MessageID>urn:uuid:m1</a:MessageID>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>').encode()


def environ(body: bytes, content_type: str = "application/soap+xml; charset=UTF-8", method: str = "POST"):
    return {"REQUEST_METHOD": method, "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body)}


def echo(envelope):
    out = etree.Element(f"{{{NS}}}EchoResponse")
    out.text = envelope.body.text
    return out


XOP_BODY = f'<e:EchoRequest xmlns:e="{NS}"><xop:Include xmlns:xop="{ns.XOP}" href="cid:p1@x"/></e:EchoRequest>'
ROUTES = {ACTION: Route(REQUEST, ACTION + "Response", echo)}


def call(door, env):
    seen = {}

    def start(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)
    body = b"".join(door(env, start))
    return seen["status"], seen["headers"], body


def test_a_request_is_read_once_and_answered_with_its_relates_to():
    request = read_request(environ(envelope_bytes()), ROUTES, Limits())
    assert isinstance(request, soap.Envelope)
    assert (request.action, request.message_id, request.body.tag, request.mtom) == (ACTION, "urn:uuid:m1",
                                                                                   REQUEST, False)
    response = reply(request, ROUTES[ACTION], echo(request))
    assert response.status == "200 OK"
    root = etree.fromstring(b"".join(response.body))
    assert root.findtext(f"{{{ns.SOAP12}}}Header/{{{ns.WSA}}}RelatesTo") == "urn:uuid:m1"
    assert root.findtext(f"{{{ns.SOAP12}}}Header/{{{ns.WSA}}}Action") == ACTION + "Response"
    assert root.findtext(f"{{{ns.SOAP12}}}Body/{{{NS}}}EchoResponse") == "hi"


def test_requests_that_are_not_requests_of_a_route_are_faults():
    cases = {
        "soap 1.1": (environ(envelope_bytes(), "text/xml"), "VersionMismatch", ""),
        "unknown action": (environ(envelope_bytes("urn:nope")), "Sender", "wsa:ActionNotSupported"),
        "no action": (environ(envelope_bytes("")), "Sender", "wsa:MessageAddressingHeaderRequired"),
        "wrong body": (environ(envelope_bytes(body=f'<e:Other xmlns:e="{NS}"/>')), "Sender", ""),
        "not understood": (environ(envelope_bytes(header='<x:H xmlns:x="urn:x" s:mustUnderstand="true"/>')),
                           "MustUnderstand", ""),
        "entity": (environ(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'), "Sender", ""),
    }
    for name, (env, code, subcode) in cases.items():
        fault = read_request(env, ROUTES, Limits())
        assert isinstance(fault, soap.SoapFault), name
        assert (fault.code, fault.subcode, fault.status) == (code, subcode, "400 Bad Request"), name


def test_a_body_over_the_limit_is_refused_before_it_is_read():
    class Unreadable(io.RawIOBase):
        def read(self, n=-1):
            raise AssertionError("the body was read")
    env = dict(environ(b""), CONTENT_LENGTH=str(10**9), **{"wsgi.input": Unreadable()})
    fault = read_request(env, ROUTES, Limits(max_bytes=1000))
    assert fault.status == "413 Payload Too Large"


def test_get_is_405_with_allow_post():
    status, headers, body = call(SoapDoor(ROUTES), environ(b"", method="GET"))
    assert status.startswith("405") and headers["Allow"] == "POST"
    assert etree.fromstring(body).find(f".//{{{ns.SOAP12}}}Fault") is not None


def test_an_mtom_request_is_inlined_for_a_plain_route_and_answered_as_mtom():
    ctype, data = mtom.build(envelope_bytes(body=XOP_BODY), [("p1@x", "text/plain", b"hello")], ACTION)
    request = read_request(environ(data, ctype), ROUTES, Limits())
    assert request.mtom and request.body.text == "aGVsbG8="
    response = reply(request, ROUTES[ACTION], echo(request))
    content_type = dict(response.headers)["Content-Type"]
    root, _, _ = mtom.split(b"".join(response.body), content_type)
    assert etree.fromstring(root).findtext(f".//{{{NS}}}EchoResponse") == "aGVsbG8="


def test_a_streaming_route_gets_spooled_parts_and_a_fault_leaves_no_spool_file(tmp_path):
    got = {}

    def take(envelope, attachments):
        got.update({cid: a.read() for cid, a in attachments.items()})
        return Reply(etree.Element(f"{{{NS}}}EchoResponse"))
    routes = {ACTION: Route(REQUEST, ACTION + "Response", take, attachments=True)}
    limits = Limits(spool_dir=tmp_path, max_stream_bytes=10**6)
    for action in (ACTION, "urn:nope"):
        ctype, data = mtom.build(envelope_bytes(action, XOP_BODY), [("p1@x", "text/plain", b"x" * 5000)], action)
        status, headers, _ = call(SoapDoor(routes, spool_dir=tmp_path, max_stream_bytes=10**6),
                                  environ(data, ctype))
        assert status.startswith("200" if action == ACTION else "400")
        assert list(tmp_path.iterdir()) == []
    assert got == {"p1@x": b"x" * 5000}
    ctype, data = mtom.build(envelope_bytes(body=XOP_BODY), [("p1@x", "text/plain", b"x" * 5000)], ACTION)
    assert read_request(environ(data, ctype), routes, limits).attachments["p1@x"].size == 5000


def test_a_handler_that_fails_is_a_receiver_fault_with_500():
    def broken(envelope):
        raise RuntimeError("bug")
    door = SoapDoor({ACTION: Route(REQUEST, ACTION + "Response", broken)})
    status, _, body = call(door, environ(envelope_bytes()))
    assert status.startswith("500")
    root = etree.fromstring(body)
    assert root.findtext(f".//{{{ns.SOAP12}}}Code/{{{ns.SOAP12}}}Value") == "soapenv:Receiver"
    assert root.findtext(f".//{{{ns.WSA}}}RelatesTo") == "urn:uuid:m1"
