"""Fixtures for audit: the Audit Record Repository as ``xdsi serve audit`` on free ports, and test certificates
made here with ``cryptography``."""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.audit import certs
from tests.services import Running, free_port, launch


@dataclass
class Arr(Running):
    host: str = "127.0.0.1"
    tls_port: int = 0
    udp_port: int = 0
    http: str = ""
    database_url: str = ""
    tmp: Path = Path()
    context: ssl.SSLContext | None = None      # with [tls], ITI-81 is HTTPS too: the client certificate


def start_arr(database_url: str, tmp: Path, tls: certs.Pki | None = None, **settings) -> Arr:
    ports = {"tls_port": free_port(), "udp_port": free_port(), "http_port": free_port()}
    ports.update({k: v for k, v in settings.items() if k in ports})
    settings = {**settings, **ports}
    extra = {}
    if tls is not None:
        extra = {"XDSI_TLS_CERT": str(tls.server_cert), "XDSI_TLS_KEY": str(tls.server_key),
                 "XDSI_TLS_CA": str(tls.ca_cert)}
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        proc, env = launch("audit", tmp, database_url, settings, [ports["tls_port"], ports["http_port"]])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    context = None
    if tls is not None:
        context = ssl.create_default_context(cafile=str(tls.ca_cert))
        context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    scheme = "https" if tls is not None else "http"
    return Arr(proc, env, "127.0.0.1", ports["tls_port"], ports["udp_port"],
               f"{scheme}://127.0.0.1:{ports['http_port']}", database_url, tmp, context)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> certs.Pki:
    return certs.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def arr(new_database, tmp_path_factory):
    """The repository without [tls]: plain TCP octet counting on its TLS port, and UDP."""
    service = start_arr(new_database(), tmp_path_factory.mktemp("arr"))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def tls_arr(new_database, tmp_path_factory, pki):
    service = start_arr(new_database(), tmp_path_factory.mktemp("arr-tls"), tls=pki)
    yield service
    service.stop()
