"""DICOM over TLS (PS3.15 B.9 / ITI-19) for the SCPs: pynetdicom's server does each TLS handshake
in its accept loop, with no timeout, so one peer that connects and stays silent stops the
listener for everyone (seen with pynetdicom 3.0). ``TlsAssociationServer`` accepts plainly and
does the handshake in the association's own thread, within ``[tls] handshake_timeout``; a refused
one is logged with its reason and given to ``on_refused`` (the Security Alert audit)."""
from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable

from pynetdicom.transport import ThreadedAssociationServer

from .tls import accept


class TlsAssociationServer(ThreadedAssociationServer):
    handshake_timeout: float = 10.0
    on_refused: Callable[[tuple, str], None] | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        return self.socket.accept()     # the handshake is the association thread's, not the acceptor's

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        tls = accept(request, self.ssl_context, self.handshake_timeout, client_address, "DICOM TLS", self.on_refused)
        if tls is None:
            return
        tls.settimeout(None)    # as pynetdicom has its accepted sockets; the DUL keeps its own timeouts
        super().process_request_thread(tls, client_address)


def start_tls_server(ae, address: tuple[str, int], context: ssl.SSLContext, handshake_timeout: float,
                     evt_handlers: list | None = None,
                     on_refused: Callable[[tuple, str], None] | None = None) -> TlsAssociationServer:
    """``ae.start_server(address, block=False, ssl_context=context, evt_handlers=…)`` with the
    handshake off the accept loop."""
    server = ae.make_server(address, ssl_context=context, evt_handlers=evt_handlers,
                            server_class=TlsAssociationServer)
    server.handshake_timeout, server.on_refused = handshake_timeout, on_refused
    threading.Thread(target=server.serve_forever, name=f"TlsAcceptor@{address[1]}", daemon=True).start()
    ae._servers.append(server)      # so that ae.shutdown() stops it as it stops its own
    return server
