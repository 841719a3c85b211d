"""Access control at the doors, sans-IO: configured peers and credentials in, a decision out.

- DICOM: ``[<actor>.peers.NAME] ae_title, hosts, subject, roles``. A calling AE is admitted as the
  first peer whose AE title, host and (under TLS) certificate subject all match; a calling AE that
  matches none is admitted from loopback with ``loopback_roles`` (``["store"]``: a modality on
  the same machine may store), and refused from anywhere else.
- HTTP: a route needs a role; ``allowed(route_role, caller_role)`` decides (``ROLE_RANK``).

The doors turn a refusal into their protocol's answer (A-ASSOCIATE-RJ, a DIMSE status, 401/403) and
an audit record (``refusal_alert``).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable

from .audit import events
from .audit_codes import USE_OF_RESTRICTED_FUNCTION, NODE_AUTHENTICATION
from .config import ConfigError
from .tls import is_loopback

DICOM_ROLES = ("store", "query", "retrieve", "reject", "replace")
LOOPBACK = ("127.0.0.0/8", "::1/128")        # a peer's hosts when its table names none


@dataclass(frozen=True)
class DicomPeer:
    name: str
    ae_title: str
    hosts: tuple                # ip networks
    subject: str                # "": any certificate, or none
    roles: frozenset

    def matches(self, calling_ae: str, host: str, subject: str | None) -> bool:
        if calling_ae.strip() != self.ae_title:
            return False
        if self.subject and subject != self.subject:
            return False
        return _in(host, self.hosts)


@dataclass(frozen=True)
class Grant:
    """Who a peer was admitted as, and what it may do."""

    name: str
    roles: frozenset

    def may(self, role: str) -> bool:
        return role in self.roles


def _in(host: str, networks: Iterable) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address in net for net in networks)


def _networks(values: Any, key: str) -> tuple:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{key}: expected a list of addresses or networks")
    try:
        return tuple(ipaddress.ip_network("::1/128" if v == "localhost" else v, strict=False) for v in values)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None


def _roles(values: Any, key: str, known: tuple) -> frozenset:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{key}: expected a list of roles ({', '.join(known)})")
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{key}: no role {unknown[0]!r} (the roles are {', '.join(known)})")
    return frozenset(values)


def _check_table(where: str, table, keys: tuple[str, ...]) -> None:
    """A configured table with only ``keys``; anything else is a ``ConfigError`` naming it."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table ({', '.join(keys)})")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ConfigError(f"{where} {unknown[0]}: no such key (the keys are {', '.join(keys)})")


def dicom_peers(raw: dict, section: str) -> tuple[DicomPeer, ...]:
    """The ``[<section>.peers.NAME]`` tables, checked; a mistake is a ``ConfigError`` naming its key."""
    peers = []
    for name, table in raw.items():
        key = f"[{section}.peers.{name}]"
        _check_table(key, table, ("ae_title", "hosts", "subject", "roles"))
        ae = table.get("ae_title", name)
        if not isinstance(ae, str) or not 0 < len(ae.strip()) <= 16:
            raise ConfigError(f"{key} ae_title: expected an AE title of 1 to 16 characters")
        subject = table.get("subject", "")
        if not isinstance(subject, str):
            raise ConfigError(f"{key} subject: expected a string (the certificate subject, CN=…,O=…)")
        peers.append(DicomPeer(name, ae.strip(), _networks(table.get("hosts", list(LOOPBACK)), f"{key} hosts"),
                               subject, _roles(table.get("roles", []), f"{key} roles", DICOM_ROLES)))
    return tuple(peers)


def loopback_roles(values: Any, section: str) -> frozenset:
    return _roles(values, f"[{section}] loopback_roles", DICOM_ROLES)


def admit_peer(peers: Iterable[DicomPeer], unknown_loopback: frozenset, calling_ae: str, host: str,
          subject: str | None = None) -> Grant | None:
    """The grant of a calling AE from ``host`` (``subject``: its verified certificate's), or None: refused."""
    for p in peers:
        if p.matches(calling_ae, host, subject):
            return Grant(p.name, p.roles)
    if unknown_loopback and is_loopback(host):
        return Grant(f"{calling_ae.strip()}@loopback", unknown_loopback)
    return None


# ------------------------------------------------------------ HTTP roles

# A route needs one of these; a caller's role allows its own and those below it.
HTTP_ROLES = ("reader", "reviewer", "operator")
ROLE_RANK = {role: rank for rank, role in enumerate(HTTP_ROLES)}


def allowed(needed: str, role: str) -> bool:
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[needed]


# ------------------------------------------------------------ audit

def refusal_alert(*, reporter: str, who: str, host: str, description: str, node: bool = False):
    """The Security Alert of a refused peer: Node Authentication when it was not let in at all, Use of
    Restricted Function when it was, but lacked the right."""
    return events.security_alert(kind=NODE_AUTHENTICATION if node else USE_OF_RESTRICTED_FUNCTION,
                                 reporter=events.destination(reporter), subject=who or "-",
                                 description=description, performers=(events.source(who or "-", host=host),))


# ------------------------------------------------------------ the DICOM door's adapter

# What each DIMSE request needs (C-ECHO: being admitted). A request of a kind not here is refused.
_DIMSE_ROLE = {"C_STORE": "store", "C_FIND": "query", "C_GET": "retrieve", "C_MOVE": "retrieve",
               "N_ACTION": "store", "C_ECHO": None}


def dimse_role(request) -> str | None:
    return _DIMSE_ROLE.get(type(request).__name__, "-")


def dicom_gate(actor: str, ae_title: str, peers, unknown_loopback: frozenset, refused_status: int, log):
    """``admit(assoc)`` for ``dicom_listener.start_server``: the calling AE's ``Grant`` goes on the
    association (``assoc.xdsi_grant``), with ``assoc.xdsi_refuse(request)`` that ``dicom_net``'s
    reactor asks before serving each request (``refused_status`` for a request without the role).
    Each refusal is logged and audited."""
    from . import audit, tls

    def admit(assoc) -> bool:
        # At EVT_REQUESTED the A-ASSOCIATE-RQ is known, not yet copied to ``requestor.ae_title``.
        calling = str(getattr(assoc.requestor.primitive, "calling_ae_title", "") or "").strip()
        host = assoc.requestor.address
        transport = assoc.dul.socket
        sock = transport.socket if transport is not None else None
        identity = tls.peer_identity(sock.getpeercert()) if hasattr(sock, "getpeercert") else None
        grant = admit_peer(peers, unknown_loopback, calling, host, identity.subject if identity else None)
        if grant is None:
            log.warning("DICOM association rejected: calling AE title not recognized",
                        extra={"calling_ae": calling, "host": host})
            audit.record(refusal_alert(
                reporter=ae_title, who=calling, host=host, node=True,
                description=f"{actor}: calling AE {calling!r} from {host} is not a configured peer"))
            return False
        assoc.xdsi_grant = grant

        def refuse(request):
            role = dimse_role(request)
            if role is None or grant.may(role):
                return None
            what = type(request).__name__.replace("_", "-")
            log.warning("DICOM request refused: not authorized",
                        extra={"calling_ae": calling, "host": host, "peer": grant.name, "request": what})
            audit.record(refusal_alert(
                reporter=ae_title, who=calling, host=host,
                description=f"{actor}: {what} needs the role {role!r}; peer {grant.name} lacks it"))
            return refused_status
        assoc.xdsi_refuse = refuse
        return True
    return admit


def may(assoc, role: str) -> bool:
    """Whether an association's peer holds ``role`` (an association admitted without a gate: yes)."""
    grant = getattr(assoc, "xdsi_grant", None)
    return grant is None or grant.may(role)



# ------------------------------------------------------------ HL7 senders

@dataclass(frozen=True)
class Hl7Sender:
    name: str
    application: str            # MSH-3 (its namespace id or universal id, or the whole field)
    facility: str               # MSH-4, likewise
    authorities: frozenset      # the assigning authorities (OIDs) it may send identities of
    hosts: tuple

    def matches(self, application: str, facility: str, host: str) -> bool:
        return _hd_is(application, self.application) and _hd_is(facility, self.facility) and _in(host, self.hosts)


def _hd_is(field: str, wanted: str) -> bool:
    parts = field.split("^")
    return wanted in (field, parts[0], parts[1] if len(parts) > 1 else None)


def hl7_senders(raw: dict, section: str, key: str = "senders") -> tuple[Hl7Sender, ...]:
    """The ``[<section>.<key>.NAME]`` tables (application, facility, authorities, hosts), checked."""
    senders = []
    for name, table in raw.items():
        where = f"[{section}.{key}.{name}]"
        _check_table(where, table, ("application", "facility", "authorities", "hosts"))
        values = {}
        for field_name in ("application", "facility"):
            value = table.get(field_name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where} {field_name}: expected MSH-{3 if field_name == 'application' else 4}, "
                                  "a non-empty string")
            values[field_name] = value
        authorities = table.get("authorities", [])
        if not isinstance(authorities, list) or not all(isinstance(a, str) and a for a in authorities):
            raise ConfigError(f"{where} authorities: expected a list of assigning authority OIDs")
        senders.append(Hl7Sender(name, values["application"], values["facility"], frozenset(authorities),
                                 _networks(table.get("hosts", list(LOOPBACK)), f"{where} hosts")))
    return tuple(senders)


def hl7_refusal(senders, loopback_any: bool, application: str, facility: str, host: str,
                authorities: Iterable[str]) -> str | None:
    """Why a message from MSH-3 ``application`` / MSH-4 ``facility`` at ``host`` naming identities of
    ``authorities`` is refused, or None. A sender no table names is taken from loopback, for any
    authority, while ``loopback_any``."""
    sender = next((s for s in senders if s.matches(application, facility, host)), None)
    if sender is None:
        if loopback_any and is_loopback(host):
            return None
        return f"sender {application}/{facility} at {host} is not a configured sender"
    other = sorted(set(authorities) - sender.authorities)
    if other:
        return f"sender {sender.name} may not send identities of assigning authority {other[0]}"
    return None


def hl7_refused(actor: str, application: str, facility: str, host: str, reason: str, log):
    """Log and audit a refused HL7 message; the ``Hl7Error`` (AR) to answer it with."""
    from . import audit
    from .audit.events import hl7_application
    from .hl7 import Hl7Error
    log.warning("HL7 message refused: sender not authorized",
                extra={"sending_app": application, "sending_facility": facility, "host": host, "reason": reason})
    audit.record(refusal_alert(reporter=actor, who=hl7_application(application, facility), host=host,
                               description=f"{actor}: {reason}"))
    return Hl7Error(f"not authorized: {reason}", code=NOT_AUTHORIZED_HL7, location="MSH^1^4", ack="AR")


# HL7 table 0357 has no "not authorized"; 207 (application internal error) with AR is what is left.
NOT_AUTHORIZED_HL7 = "207"
