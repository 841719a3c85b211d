"""``xdsi certs --out DIR``: a test PKI for running the domain with mutual TLS on one machine.

A CA; a node certificate for every actor (server and client: its SANs are localhost, 127.0.0.1,
::1 and this host's name); a client certificate; and a second, unrelated CA with a client
certificate of its own, which a node must refuse (for negative tests). RSA 2048 keys, as the
ATNA BCP195 option's TLS_ECDHE_RSA suites and DCMTK's default profile expect. Keys are 0600."""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import socket
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# file stem -> (common name, issuing CA's stem or None for a CA, extended key usages)
PLAN = {
    "ca": ("xdsi test CA", None, ()),
    "node": ("", "ca", (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)),
    "client": ("xdsi test client", "ca", (ExtendedKeyUsageOID.CLIENT_AUTH,)),
    "other-ca": ("xdsi other CA (not trusted)", None, ()),
    "other-client": ("xdsi other client", "other-ca", (ExtendedKeyUsageOID.CLIENT_AUTH,)),
}
CA_DAYS, LEAF_DAYS = 3650, 825


def files(out: Path) -> list[Path]:
    return [out / f"{stem}.{ext}" for stem in PLAN for ext in ("pem", "key")]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xdsi test PKI"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["localhost", "127.0.0.1", "::1", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _certificate(cn: str, key, issuer: tuple | None, usages: tuple, hosts: list[str]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    subject = _name(cn)
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=LEAF_DAYS if issuer else CA_DAYS))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is None:
        builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False,
                                                encipher_only=False, decipher_only=False), critical=True))
    else:
        builder = (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                                content_commitment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=False, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                  critical=False))
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)   # an overwritten file keeps its old mode otherwise


def make(out: Path, hosts: list[str]) -> None:
    """Every file of ``PLAN`` in ``out``, new keys and certificates."""
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, tuple] = {}
    for stem, (cn, issuer, usages) in PLAN.items():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _certificate(cn or hosts[0], key, made.get(issuer), usages, hosts if stem == "node" else [])
        made[stem] = (cert, key)
        _write(out / f"{stem}.key", key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()), 0o600)
        _write(out / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def config_lines(out: Path) -> str:
    d = out.resolve()
    return (f'[tls]\ncert = "{d / "node.pem"}"\nkey = "{d / "node.key"}"\nca = "{d / "ca.pem"}"\n'
            f"require_client_cert = true\n")


def run(_config, args: argparse.Namespace) -> int:
    out: Path = args.out
    present = [p for p in files(out) if p.exists()]
    if present and not args.force:
        missing = [p.name for p in files(out) if not p.exists()]
        if missing:
            print(f"xdsi certs: {out} holds part of a set (no {', '.join(missing)}); "
                  f"--force makes a new one", file=sys.stderr)
            return 2
        print(f"# {out}: the certificates there are kept (--force makes new ones)", file=sys.stderr)
    else:
        make(out, [*dict.fromkeys([socket.gethostname(), socket.getfqdn(), *args.host])])
        print(f"# {out}: ca, node (server and client), client; other-ca and other-client are for "
              f"negative tests (not trusted)", file=sys.stderr)
    print(config_lines(out), end="")
    return 0
