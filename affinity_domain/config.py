"""Configuration: one TOML file plus ``XDSI_<SECTION>_<KEY>`` environment overrides.

Each actor reads its own section and ``[domain]``. Defaults live here so that the
documented keys (a contract with integrators' scripts) have exactly one home. An actor
reads them as a typed settings object (``build_settings``), built and checked once at start.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from .exceptions import XdsiError

# Every HTTP listener's connection limits: each actor with an HTTP door has these keys in its section.
HTTP_DEFAULTS: dict[str, Any] = {
    "http_max_connections": 100,    # open connections; past it the quietest idle one is closed for the new one
    "http_idle_seconds": 30.0,      # a kept-alive connection with no request is closed after this
    "http_header_seconds": 10.0,    # a request's line and headers must all come within this
    "http_request_seconds": 300.0,  # ... and the whole request, its body too
    "http_linger_seconds": 2.0,     # after a body is refused unread, what the client still sends is dropped this long
}
# The caps on an MTOM request, for each actor with a SOAP door.
MTOM_DEFAULTS: dict[str, Any] = {
    "max_mtom_parts": 10000,        # MIME parts of one request
    "max_mtom_header_bytes": 16384,  # one part's MIME headers
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "domain": {
        "assigning_authority": "1.3.6.1.4.1.21367.2005.13.20.1000",
        "home_community_id": "urn:oid:1.3.6.1.4.1.21367.13.70.200",
    },
    "database": {
        "url": "",
    },
    # Every actor's background workers (indexer, publisher, outbox, job workers, recovery).
    "workers": {
        "restart_seconds": 1.0,         # a worker that died is restarted after this; doubled each death in a row
        "restart_max_seconds": 60.0,    # ... up to this
        "stop_seconds": 5.0,            # how long an actor waits for its workers when it stops
        "check_seconds": 2.0,           # how often their state is looked at and recorded (xdsi status)
    },
    "registry": {
        "host": "127.0.0.1",
        "port": 8010,
        "path": "/registry",
        "feed_host": "127.0.0.1",
        "feed_port": 2577,
        "feed_max_connections": 256,   # MLLP connections open at once; past it the longest idle is closed
        "feed_threads": 8,             # MLLP messages handled at once (idle connections hold none)
        "feed_idle_seconds": 300.0,    # an MLLP connection with no message under way is closed after this
        "feed_message_seconds": 30.0,  # an MLLP frame must be whole this long after its first byte
        "feed_backlog": 128,           # the MLLP listen queue
        "feed_senders": {},            # [registry.feed_senders.NAME], as [pix.senders.NAME] (the PIX manager)
        "feed_loopback_senders": True,  # a sender no table names is taken from loopback
        "threads": 8,
        "workers": 2,          # HTTP worker processes (one per core)
        "max_request_bytes": 20 * 1024 * 1024,
        "max_query_results": 10000,
        "codes_file": "",               # empty: the code sets shipped with the registry (code_sets.toml)
        "validate_codes": True,
        "multi_patient_roles": [],      # XUA role codes answered ITI-51; empty: ITI-51 is refused
        **HTTP_DEFAULTS, **MTOM_DEFAULTS,
    },
    "pix": {
        "host": "127.0.0.1",
        "port": 2575,                   # ITI-8 and ITI-9 (MLLP)
        "http_host": "127.0.0.1",
        "http_port": 8050,              # review queue and admin (JSON)
        "domains": [],                  # known patient-id domains; empty: a domain joins with its first id
        "facility_authorities": {},     # sending facility -> OID for PID-3 ids without an assigning authority
        # ITI-8/ITI-9 senders (access.py): [pix.senders.NAME] application (MSH-3), facility (MSH-4),
        # authorities (the OIDs it may send identities of), hosts (default loopback). A sender none
        # names is refused, unless it is on loopback while loopback_senders (the quick start).
        "senders": {},
        "loopback_senders": True,
        "lower_threshold": 63.0,        # below: different patients
        "upper_threshold": 70.0,        # above: the same patient; between: review
        "blocking_keys": [],            # empty: the built-in keys
        "model_reload_seconds": 30.0,   # how often the manager looks for parameters `xdsi pix train` stored
        "affinity_prefix": "XDSI",      # affinity-domain ids are <prefix><n>
        "registry_feed": "127.0.0.1:2577",   # ITI-8 of affinity-domain ids; empty: not forwarded
        "subscribers": [],              # ITI-10 receivers, "host:port"
        "max_message_bytes": 1048576,
        "workers": 2,                   # MLLP worker processes (one per core)
        "max_json_bytes": 65536,        # a request body of the review and admin API
        **HTTP_DEFAULTS,
        "mllp_max_connections": 256,   # MLLP connections open at once; past it the longest idle is closed
        "mllp_threads": 8,             # MLLP messages handled at once (idle connections hold none)
        "mllp_idle_seconds": 300.0,    # an MLLP connection with no message under way is closed after this
        "mllp_message_seconds": 30.0,  # an MLLP frame must be whole this long after its first byte
        "mllp_backlog": 128,           # the MLLP listen queue
    },
    "consumer": {
        "host": "127.0.0.1",
        "mllp_port": 2576,              # orders: ORM^O01, OMI^O23
        "order_senders": {},            # [consumer.order_senders.NAME], as [pix.senders.NAME] (the RIS)
        "order_loopback_senders": True,  # a sender no table names is taken from loopback
        "mllp_max_connections": 256,   # MLLP connections open at once; past it the longest idle is closed
        "mllp_threads": 8,             # MLLP messages handled at once (idle connections hold none)
        "mllp_idle_seconds": 300.0,    # an MLLP connection with no message under way is closed after this
        "mllp_message_seconds": 30.0,  # an MLLP frame must be whole this long after its first byte
        "mllp_backlog": 128,           # the MLLP listen queue
        "http_host": "127.0.0.1",
        "http_port": 8040,              # start a fetch, see progress and history (JSON)
        "ae_title": "XDSI_CONSUMER",
        "local_assigning_authority": "1.3.6.1.4.1.21367.2005.13.20.2000",
        "local_pacs": "LOCALPACS@127.0.0.1:11114",   # where reconciled studies are stored (C-STORE)
        "accession_prefix": "",         # for outside accession numbers, when the source has none below
        "accession_prefixes": {},       # source repositoryUniqueId -> that site's accession prefix
        "procedure_codes": {},          # outside procedure code -> local code
        "pix": "127.0.0.1:2575",        # ITI-9
        "registry_url": "http://127.0.0.1:8010/registry",   # ITI-18
        "repositories": {"1.3.6.1.4.1.21367.13.40.301": "http://127.0.0.1:8020/repository"},   # ITI-43
        "sources": {"1.3.6.1.4.1.21367.13.40.302": "http://127.0.0.1:8030/imaging-source"},    # RAD-69
        "modalities": [],               # relevancy: empty means any
        "body_parts": [],
        "lookback_days": 0,             # 0: no limit
        "max_studies": 0,               # 0: no limit
        "max_attempts": 6,              # then the job is failed, with its reason
        "timeout": 60.0,
        "workers": 4,                   # studies retrieved concurrently
        "spool_dir": "",                # empty: <data dir>/consumer
        "held_mb_per_study": 64.0,      # a study's RAD-69 images kept in memory until stored; past it, spooled
        "dicom_host": "127.0.0.1",      # AE ae_title: the C-MOVE destination
        "dicom_port": 11113,
        "dicom_sources": {"XDSI_SOURCE": "127.0.0.1:11112"},   # Retrieve AE Title -> host:port (C-MOVE/C-GET)
        # The C-MOVE destination's bounds (affinity_domain/dicom_limits.py says what each does):
        "dicom_max_associations": 32,
        "dicom_max_connections": 64,    # TCP connections held; an idle one gives way to a new one
        "dicom_listen_backlog": 128,
        "dicom_max_pdu_bytes": 16382,   # the P-DATA-TF size we announce; a longer PDU is aborted
        "dicom_max_associate_pdu_bytes": 256 * 1024,   # any other PDU (A-ASSOCIATE-RQ...): longer is aborted
        "dicom_network_timeout": 60.0,  # idle association, A-ASSOCIATE-RQ awaited (ARTIM), one PDU arriving
        "peers": {},                    # [consumer.peers.NAME], as [imaging_source.peers.NAME] (access.py)
        "loopback_roles": ["store"],    # a calling AE that is no peer, from loopback (the sources on this host)
        "retrieve_order": ["rad69", "c-move"],   # tried in order; the next one covers what the last could not
        # auto: a configured prefix when the source has one, else Issuer of Accession Number Sequence;
        # prefix: the prefix only (none configured: the accession as it came); issuer: the issuer only
        "accession_mode": "auto",
        "accession_issuers": {},        # source (Retrieve Location UID or AE) -> issuer OID; else the source's uid
        "reports": "skip",              # a report beside the study:
                                        # skip | store (Encapsulated PDF / Basic Text SR) | oru
        "report_oru": "",               # host:port of the ORU^R01 receiver, for reports = "oru"
        "pacs_orders": "",              # host:port: an ORM^O01 goes there before the images (a PACS that needs one)
        "retry_base_seconds": 2.0,      # back-off: base * 3^(attempt-1), at most 300 s
        "processes": 1,                 # job worker processes (each runs `workers` threads); 1: this process only
        "max_json_bytes": 65536,        # a request body of the fetches and jobs API
        **HTTP_DEFAULTS,
    },
    "repository": {
        "host": "127.0.0.1",
        "port": 8020,
        "path": "/repository",
        "repository_unique_id": "1.3.6.1.4.1.21367.13.40.301",
        "registry_url": "http://127.0.0.1:8010/registry",   # ITI-42 goes here
        "registry_timeout": 30.0,       # seconds; then XDSRegistryNotAvailable
        "store_dir": "",                # document bytes; empty: <data dir>/repository
        "threads": 8,
        "workers": 2,                   # HTTP worker processes (one per core)
        "max_request_bytes": 20 * 1024 * 1024,         # SOAP part, or a whole inline-base64 request
        "max_document_bytes": 4 * 1024 * 1024 * 1024,  # a whole MTOM request
        "recovery_seconds": 60,         # how often unfinished submissions are resolved
        "pending_grace_seconds": 600,   # a submission of another host is left alone this long
        **HTTP_DEFAULTS, **MTOM_DEFAULTS,
        "http_request_seconds": 3600.0,  # a whole request: up to max_document_bytes takes a while
    },
    "imaging_source": {
        "ae_title": "XDSI_SOURCE",
        "dicom_host": "127.0.0.1",
        "dicom_port": 11112,
        "host": "127.0.0.1",            # RAD-69 (SOAP)
        "port": 8030,
        "path": "/imaging-source",
        "assigning_authority": "1.3.6.1.4.1.21367.2005.13.20.3000",   # local ids without an issuer
        "calling_ae_authorities": {},   # calling AE -> patient-id OID, for instances without an issuer
        "quiet_seconds": 30,
        "move_destinations": {},        # AE = "host:port"
        "repository_unique_id": "1.3.6.1.4.1.21367.13.40.302",   # RAD-69; the Retrieve Location UID
        "repository_url": "http://127.0.0.1:8020/repository",   # RAD-68 goes here
        "repository_timeout": 60.0,
        # ITI-57 goes here: a study whose instances are all gone has its manifest deprecated
        # (empty: the manifest is only withdrawn locally and stays Approved in the registry).
        "registry_url": "http://127.0.0.1:8010/registry",
        "pix_host": "127.0.0.1",        # ITI-9
        "pix_port": 2575,
        "pix_timeout": 10.0,
        "retry_seconds": 30,            # a publication that failed (PIX or repository) is tried again after this
        "poll_seconds": 1.0,            # how often the publisher looks for quiet studies
        "store_dir": "",                # received instances; empty: <data dir>/imaging-source
        "duplicate_policy": "replace",  # a re-sent SOP Instance UID: replace | ignore | reject
        "source_id": "1.3.6.1.4.1.21367.13.80.302",   # XDSSubmissionSet.sourceId
        "outside_calling_aes": [],      # calling AEs whose studies are never published (they are outside copies)
        "author_institution": "",
        # DocumentEntry codes (code, coding scheme, display name); defaults are in the NIST kit's code set.
        "class_code": ["IMAGES", "1.3.6.1.4.1.19376.1.2.6.1", "Images"],
        "type_code": ["18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"],
        "confidentiality_code": ["N", "2.16.840.1.113883.5.25", "Normal"],
        "healthcare_facility_type_code": ["22232009", "2.16.840.1.113883.6.96", "Hospital"],
        "practice_setting_code": ["309964003", "2.16.840.1.113883.6.96", "Radiology department"],
        "content_type_code": ["UNSPECIFIED-CONTENT-TYPE", "1.3.6.1.4.1.21367.2017.3", "Unspecified Clinical Activity"],
        "threads": 8,
        "max_request_bytes": 20 * 1024 * 1024,
        "max_associations": 32,
        "max_pdu_bytes": 1024 * 1024,   # the P-DATA-TF size we announce for receiving; a longer PDU is aborted
        "network_timeout": 60.0,        # idle association, A-ASSOCIATE-RQ awaited (ARTIM), one PDU arriving
        "dicom_max_connections": 64,    # TCP connections held; an idle one gives way to a new one
        "dicom_listen_backlog": 128,
        "dicom_max_associate_pdu_bytes": 256 * 1024,   # any PDU but P-DATA-TF (A-ASSOCIATE-RQ...): longer is aborted
        "max_query_results": 10000,
        # DICOMweb (QIDO-RS, WADO-RS, WADO-URI) beside RAD-69 on the same port, under /dicomweb
        "dicomweb_max_results": 1000,   # a QIDO-RS answer's largest page (limit is cut to it, with a Warning)
        "dicomweb_base_url": "",        # RetrieveURL/BulkDataURI base; empty: http(s)://host:port/dicomweb
        "dicomweb_bulk_data_bytes": 1024,   # metadata values longer than this are a BulkDataURI
        "dicomweb_max_frames": 1000,    # frames one request may name
        # durable: a C-STORE is answered once the instance's file, its name and its intake journal
        # line are on disk (fsync) and the index commits are flushed; fast: answered from the page
        # cache (a power cut loses the last seconds of instances the modality was told are stored).
        "durability": "durable",
        # Storage Commitment (N-ACTION in, N-EVENT-REPORT back): requests worked on at once (more
        # are answered Resource limitation), and the tries of a report sent on a new association
        # (to the calling AE's address in move_destinations) when the modality has let go of its own.
        "max_pending_commitments": 16,
        "commitment_attempts": 3,
        "commitment_retry_seconds": 10.0,
        "min_free_bytes": 256 * 1024 * 1024,   # below this, C-STORE answers Out of Resources
        # Received datasets are held in memory until stored (fastest); true spools each to a file
        # as it arrives, for sites whose instances run to hundreds of MB (whole-slide, tomosynthesis).
        "spool_received": False,
        # A query (C-FIND, C-MOVE/C-GET, RAD-69) or a rejection note waits this long for instances
        # already answered to be indexed, then fails rather than miss them.
        "index_wait_seconds": 10.0,
        "study_patients_cached": 100000,   # studies whose patient intake remembers (others: looked up)
        # How long intake waits for the index to say whose a new study is; past it the instance is
        # taken and the indexer checks (as it does with the database down).
        "study_patient_lookup_seconds": 1.0,
        # DICOM peers (affinity_domain.access): [imaging_source.peers.NAME] ae_title, hosts (default
        # loopback), subject (TLS), roles (store, query, retrieve, reject, replace). A calling AE that
        # is none of them is refused at association, unless it comes from loopback: then it has these.
        "peers": {},
        "loopback_roles": ["store"],
        **HTTP_DEFAULTS, **MTOM_DEFAULTS,
    },
    # ITI-19 node authentication. An actor's own [ACTOR.tls] table overrides any of these keys.
    "tls": {
        "cert": "",                     # PEM: this node's certificate (and chain); empty: no TLS, loopback only
        "key": "",                      # PEM: its private key; empty: the key is in the cert file
        "ca": "",                       # PEM: the CA certificates a peer's certificate must chain to
        "require_client_cert": True,    # false: a client certificate is asked for, checked if sent
        "allow_plaintext": False,       # true: a listener off loopback may still be plain (it is logged)
        "handshake_timeout": 10.0,      # seconds a peer has to finish the TLS handshake
    },
    # The JSON APIs' callers (affinity_domain.http_auth): bearer tokens (xdsi token add), or under TLS a
    # client certificate whose subject is mapped here to a role (reader, reviewer or operator).
    "access": {
        "subjects": {},
    },
    # ITI-40 X-Service Provider checks. An actor's own [ACTOR.xua] table overrides any of these keys.
    "xua": {
        "mode": "optional",             # off | optional (no assertion: anonymous) | required
        "trusted_issuers": [],          # PEM certificates of the X-Assertion Providers; empty: every assertion fails
        "audience": "",                 # the URI an assertion's AudienceRestriction must name
        "clock_skew_seconds": 60,       # leeway on NotBefore / NotOnOrAfter
    },
    # ITI-19 node authentication; every actor's listeners and clients read it (audit's syslog today).
    # ITI-20: what every actor sends (destinations ... source_id), and the Audit Record Repository (the rest).
    "audit": {
        "destinations": ["tls://127.0.0.1:6514"],   # tls:// (RFC 5425), tcp:// (RFC 6587), udp:// (RFC 5426)
        "spool_dir": "",                # the durable queue; empty: <data dir>/audit-spool
        "send_batch": 500,              # records per write to a destination
        "send_timeout": 10.0,           # connect, write and acknowledgement, each
        "retry_base_seconds": 1.0,      # back-off while a destination is down: base * 2^(n-1), at most retry_max
        "retry_max_seconds": 60.0,
        "segment_bytes": 16 * 1024 * 1024,   # a spool file is closed and a new one begun past this size
        "max_record_bytes": 60000,      # a larger audit message is shortened (queries cut, objects left out)
        "source_id": "",                # AuditSourceID; empty: <actor>@<host name>
        "enterprise_site_id": "",       # AuditEnterpriseSiteID; empty: left out
        "host": "127.0.0.1",            # the ARR (xdsi serve audit) listens here
        "tls_port": 6514,               # syslog over TLS (RFC 5425); plain TCP octet counting without [tls]
        "udp_port": 5514,               # syslog over UDP (RFC 5426)
        "http_port": 8060,              # ITI-81 Retrieve ATNA Audit Event (FHIR AuditEvent search)
        "max_message_bytes": 65536,     # a larger syslog frame is refused (TCP: the connection is closed)
        "udp_buffer_bytes": 64 * 1024 * 1024,  # SO_RCVBUF of the UDP socket: how much of a burst the kernel holds
        "max_connections": 64,          # syslog TCP/TLS connections at once
        "idle_timeout": 300.0,          # a syslog connection silent this long is closed
        "queue_records": 50000,         # received records waiting for the database, at most (TCP peers wait)
        "insert_batch": 1000,           # records per INSERT
        "writers": 2,                   # processes that parse and store received records (one per core)
        "max_search_results": 1000,     # ITI-81 and xdsi audit search answer at most this many
    },
}

# Sections an actor's section may override key by key, in its own sub-table (``[registry.tls]``),
# from the environment as ``XDSI_<ACTOR>_<SECTION>_<KEY>`` (``XDSI_REGISTRY_TLS_CERT``).
OVERLAID = ("tls", "xua")

# Keys named by ../shared/affinity-domain.md whose environment variable has no section prefix.
TOP_LEVEL_ENV = {("database", "url"): "XDSI_DATABASE_URL", ("paths", "data_dir"): "XDSI_DATA_DIR"}


@dataclass
class Config:
    """The merged configuration: defaults < TOML file < environment."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_dir: Path = Path(".xdsi")

    def section(self, name: str) -> dict[str, Any]:
        return self.sections.setdefault(name, {})

    @property
    def domain(self) -> dict[str, Any]:
        return self.section("domain")

    @property
    def database_url(self) -> str:
        return self.section("database").get("url", "")


_BOOLEAN_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                  "off": False, "": False}


def _env_value(raw: str, default: Any) -> Any:
    """Environment strings take the type of the default (TOML syntax for lists and tables). One that
    does not read as that type stays a string, for ``build_settings`` to refuse with its key."""
    try:
        if isinstance(default, bool):
            return _BOOLEAN_WORDS.get(raw.strip().lower(), raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, (list, dict)):
            return tomllib.loads(f"v = {raw}")["v"]
    except (ValueError, tomllib.TOMLDecodeError):
        pass
    return raw


def load(path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
         environ: dict[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    sections = {name: dict(values) for name, values in DEFAULTS.items()}
    path = path or env.get("XDSI_CONFIG") or ("xdsi.toml" if Path("xdsi.toml").exists() else None)
    if path:
        with open(path, "rb") as f:
            for name, values in tomllib.load(f).items():
                sections.setdefault(name, {}).update(values)
    for name, values in sections.items():
        for key, value in list(values.items()):
            var = TOP_LEVEL_ENV.get((name, key), f"XDSI_{name.upper()}_{key.upper()}")
            if var in env:
                values[key] = _env_value(env[var], value)
    for name, values in sections.items():
        if name in OVERLAID or name not in DEFAULTS:
            continue
        for overlay in OVERLAID:
            for key, default in DEFAULTS[overlay].items():
                var = f"XDSI_{name.upper()}_{overlay.upper()}_{key.upper()}"
                if var in env:
                    own = values.setdefault(overlay, {})
                    if isinstance(own, dict):   # a non-table is refused by build_overlaid, with its key
                        own[key] = _env_value(env[var], default)
    directory = data_dir or env.get("XDSI_DATA_DIR") or sections.get("paths", {}).get("data_dir") or ".xdsi"
    return Config(sections=sections, data_dir=Path(directory))


class ConfigError(XdsiError):
    """A configuration or start-up problem to report in one line, not as a traceback."""

    permanent = True

# ------------------------------------------------------------ typed settings

@dataclass(frozen=True)
class Range:
    """``Annotated[int, Range(1)]``: the bounds a number must stay within (None: unbounded)."""

    low: float | None = None
    high: float | None = None


Port = Annotated[int, Range(0, 65535)]
Count = Annotated[int, Range(1)]          # threads, workers, sizes: at least one
Natural = Annotated[int, Range(0)]        # zero or more (bytes, whole seconds)
Seconds = Annotated[float, Range(0)]
PduBytes = Annotated[int, Range(4096)]        # a maximum PDU length we announce or accept; 0 (unlimited) is not one


PositiveSeconds = Annotated[float, Range(0.01)]


@dataclass(frozen=True)
class HttpSettings:
    """The ``http_*`` keys (``HTTP_DEFAULTS``): a base of each settings class whose actor has an HTTP door."""

    http_max_connections: Count
    http_idle_seconds: PositiveSeconds
    http_header_seconds: PositiveSeconds
    http_request_seconds: PositiveSeconds
    http_linger_seconds: Seconds


@dataclass(frozen=True)
class SoapSettings(HttpSettings):
    """``HttpSettings`` and the MTOM caps (``MTOM_DEFAULTS``), for an actor with a SOAP door."""

    max_mtom_parts: Count
    max_mtom_header_bytes: Count


@dataclass(frozen=True)
class DomainSettings:
    SECTION: ClassVar[str] = "domain"
    assigning_authority: str
    home_community_id: str


S = TypeVar("S")


def address(where: str, key: str) -> tuple[str, int]:
    """A ``host:port`` value (the host defaults to 127.0.0.1); ``key`` names it in the refusal."""
    host, _, port = where.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key} = {where!r}: expected host:port")
    return host or "127.0.0.1", int(port)


def build_settings(cls: type[S], config: Config) -> S:
    """A frozen dataclass of settings from its ``SECTION``: each field is the key of the same name, its
    default the one declared in ``DEFAULTS``, its value checked against the field's type (lists become
    tuples; the field's type must be the declared default's). A field whose type is another such class
    (``DomainSettings``) is built from that section.
    A wrong type or value is a one-line ``ConfigError`` naming the key; ``__post_init__`` may add checks."""
    name = cls.SECTION
    declared, values = DEFAULTS[name], config.section(name)
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if not f.init:
            continue
        if hasattr(kind, "SECTION"):
            kwargs[f.name] = build_settings(kind, config)
        elif f.name not in declared:
            raise TypeError(f"{cls.__name__}.{f.name}: [{name}] declares no such key")
        elif _base(kind) is not _base(type(declared[f.name])):   # the declared default's type is the key's
            kind_name = type(declared[f.name]).__name__
            raise TypeError(f"{cls.__name__}.{f.name}: its declared default is of type {kind_name}")
        else:
            kwargs[f.name] = _typed(values.get(f.name, declared[f.name]), kind, f"[{name}] {f.name}")
    return cls(**kwargs)


def build_overlaid(cls: type[S], config: Config, actor: str) -> S:
    """``build_settings`` of an ``OVERLAID`` section with the actor's own sub-table over it, key by
    key (``[tls]`` then ``[registry.tls]``). A key neither declares is refused: a misspelt security
    key must not leave its default in force unnoticed."""
    name = cls.SECTION
    own = config.section(actor).get(name, {})
    if not isinstance(own, dict):
        raise ConfigError(f"[{actor}] {name}: expected a table, [{actor}.{name}]")
    hints = typing.get_type_hints(cls, include_extras=True)
    for where, values in ((f"[{name}]", config.section(name)), (f"[{actor}.{name}]", own)):
        unknown = sorted(set(values) - set(DEFAULTS[name]))
        if unknown:
            raise ConfigError(f"{where} {unknown[0]}: no such key (the keys are {', '.join(DEFAULTS[name])})")
    for key, value in own.items():
        if key in hints:
            _typed(value, hints[key], f"[{actor}.{name}] {key}")
    merged = Config(sections={**config.sections, name: {**config.section(name), **own}}, data_dir=config.data_dir)
    try:
        return build_settings(cls, merged)
    except ConfigError as e:
        if own:
            raise ConfigError(f"{e} (with [{actor}.{name}] over [{name}])") from None
        raise


def _base(kind: Any) -> Any:
    """The plain type a field's annotation stands for, as a TOML value has it (a list for a tuple)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Annotated:
        return _base(args[0])
    if origin is Literal:
        return type(args[0])
    base = origin or kind
    return list if base is tuple else base


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          tuple: "a list", dict: "a table"}


def _typed(value: Any, kind: Any, key: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Annotated:
        value = _typed(value, args[0], key)
        for bound in (m for m in args[1:] if isinstance(m, Range)):
            if (bound.low is not None and value < bound.low) or (bound.high is not None and value > bound.high):
                within = f"at least {bound.low:g}" if bound.high is None else f"from {bound.low:g} to {bound.high:g}"
                raise ConfigError(f"{key} = {value!r}: must be {within}")
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} = {value!r}: use one of {', '.join(map(str, args))}")
        return value
    if kind is Any:
        return value
    base = origin or kind
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is tuple and isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, base) or (isinstance(value, bool) and base is not bool):
        raise ConfigError(f"{key}: expected {_NAMES.get(base, base.__name__)}, got {value!r}")
    if base is tuple and args:
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        items = args[:-1] * len(value) if args[-1] is Ellipsis else args
        return tuple(_typed(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, items)))
    if base is dict and args:
        return {_typed(k, args[0], key): _typed(v, args[1], f"{key}.{k}") for k, v in value.items()}
    return value
