"""SoapClient over a real HTTP/1.1 server: kept-alive connections."""
import http.server
import socket
import threading

import pytest
from lxml import etree

from affinity_domain import soap
from affinity_domain.soap_client import SoapClient, TransportError
from tests.services import free_port, read_http_message

NS = "urn:example:echo"


class Server:
    """An HTTP/1.1 server that answers every SOAP request and records the client port of each;
    ``stop`` also closes the connections it keeps alive, as a restarted peer would."""

    def __init__(self, port: int):
        self.ports: list[int] = []
        self.connections: list[socket.socket] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                server.ports.append(self.client_address[1])
                server.connections.append(self.connection)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                xml = soap.to_bytes(soap.envelope(etree.Element(f"{{{NS}}}EchoResponse"), "urn:x:EchoResponse"))
                self.send_response(200)
                self.send_header("Content-Type", "application/soap+xml")
                self.send_header("Content-Length", str(len(xml)))
                self.end_headers()
                self.wfile.write(xml)

            def log_message(self, *args):
                pass
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        for c in self.connections:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:          # its handler closed it already
                pass
        self.thread.join(timeout=10)


def test_calls_reuse_one_connection_and_survive_the_server_closing_it():
    port = free_port()
    client = SoapClient(f"http://127.0.0.1:{port}/echo", timeout=10)
    server = Server(port)
    try:
        for _ in range(3):
            assert client.call("urn:example:Echo", etree.Element(f"{{{NS}}}Echo")).http_status == 200
        assert len(server.ports) == 3 and len(set(server.ports)) == 1
    finally:
        server.stop()
    # The kept-alive connection is now closed by its peer: the next call takes a new one.
    server = Server(port)
    try:
        assert client.call("urn:example:Echo", etree.Element(f"{{{NS}}}Echo")).http_status == 200
        assert len(server.ports) == 1
    finally:
        server.stop()


def test_a_call_whose_connection_closes_unanswered_after_the_request_is_not_sent_again():
    """The peer closes a kept-alive connection once the next request has arrived, unanswered: it may
    have acted on it (a registry killed after its commit), so the POST is not sent a second time,
    and the caller is told it may have been processed. The next call opens a new connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    answer = soap.to_bytes(soap.envelope(etree.Element(f"{{{NS}}}EchoResponse"), "urn:x:EchoResponse"))
    seen = []

    def read_request(conn):
        seen.append(read_http_message(conn)[1])

    def reply(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(answer) + answer)

    def serve():
        first, _ = listener.accept()
        read_request(first)
        reply(first)
        read_request(first)           # the second call arrives on the kept-alive connection...
        first.close()                 # ...and is dropped unanswered
        second, _ = listener.accept()
        read_request(second)
        reply(second)
        second.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = SoapClient(f"http://127.0.0.1:{port}/echo", timeout=10)
    try:
        assert client.call("urn:example:Echo", etree.Element(f"{{{NS}}}Echo")).http_status == 200
        with pytest.raises(TransportError) as failed:
            client.call("urn:example:Echo", etree.Element(f"{{{NS}}}Echo"))
        assert failed.value.maybe_processed
        assert client.call("urn:example:Echo", etree.Element(f"{{{NS}}}Echo")).http_status == 200
    finally:
        thread.join(timeout=10)
        listener.close()
    assert len(seen) == 3
