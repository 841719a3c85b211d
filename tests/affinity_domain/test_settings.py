"""Each actor's typed settings: built from its section and [domain] by config.build_settings, with
the declared defaults, the XDSI_<SECTION>_<KEY> overrides, and a wrong value refused with its key."""
import dataclasses
import os
import subprocess
import sys
from typing import ClassVar

import pytest

from affinity_domain.config import DEFAULTS, ConfigError, build_settings, load
from consumer.settings import ConsumerSettings
from imaging_source.settings import ImagingSourceSettings
from pix_manager.matching import Thresholds
from pix_manager.settings import PixSettings
from registry.settings import RegistrySettings
from repository.settings import RepositorySettings
from tests.services import ROOT, free_port

ACTORS = [RegistrySettings, RepositorySettings, PixSettings, ImagingSourceSettings, ConsumerSettings]


@pytest.mark.parametrize("cls", ACTORS, ids=lambda c: c.SECTION)
def test_every_declared_key_is_a_typed_field_with_its_declared_default(cls):
    s = build_settings(cls, load(environ={}))
    keys = {f.name for f in dataclasses.fields(cls) if f.init} - {"domain"}
    assert keys == set(DEFAULTS[cls.SECTION])
    for key, default in DEFAULTS[cls.SECTION].items():
        value = getattr(s, key)
        if key == "blocking_keys":     # empty: the built-in keys
            assert value and not default
            continue
        assert value == (tuple(default) if isinstance(default, list) else default), key
        assert type(value) is not list and isinstance(value, type(default) if not isinstance(default, list)
                                                      else tuple), key
    assert s.domain.assigning_authority == DEFAULTS["domain"]["assigning_authority"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.threshold = 1


@pytest.mark.parametrize("cls, var, raw, key, expected", [
    (RegistrySettings, "XDSI_REGISTRY_PORT", "9010", "port", 9010),
    (RegistrySettings, "XDSI_REGISTRY_VALIDATE_CODES", "off", "validate_codes", False),
    (RepositorySettings, "XDSI_REPOSITORY_REGISTRY_TIMEOUT", "2.5", "registry_timeout", 2.5),
    (PixSettings, "XDSI_PIX_SUBSCRIBERS", '["127.0.0.1:2590"]', "subscribers", ("127.0.0.1:2590",)),
    (PixSettings, "XDSI_PIX_UPPER_THRESHOLD", "80", "thresholds", Thresholds(63.0, 80.0)),
    (ImagingSourceSettings, "XDSI_IMAGING_SOURCE_DUPLICATE_POLICY", "reject", "duplicate_policy", "reject"),
    (ImagingSourceSettings, "XDSI_IMAGING_SOURCE_MOVE_DESTINATIONS", '{ PACS = "10.0.0.5:104" }', "destinations",
     {"PACS": ("10.0.0.5", 104)}),
    (ConsumerSettings, "XDSI_CONSUMER_RETRIEVE_ORDER", '["C-GET", "rad69"]', "retrieve_order", ("c-get", "rad69")),
    (ConsumerSettings, "XDSI_CONSUMER_LOCAL_PACS", "PACS@10.0.0.5:104", "pacs", ("PACS", "10.0.0.5", 104)),
    (ConsumerSettings, "XDSI_CONSUMER_HELD_MB_PER_STUDY", "2", "held_per_study", 2 * 1024 * 1024),
    (ImagingSourceSettings, "XDSI_DOMAIN_ASSIGNING_AUTHORITY", "1.2.3", "domain",
     dataclasses.replace(build_settings(ImagingSourceSettings, load(environ={})).domain, assigning_authority="1.2.3")),
])
def test_environment_overrides_arrive_typed(cls, var, raw, key, expected):
    assert getattr(build_settings(cls, load(environ={var: raw})), key) == expected


@pytest.mark.parametrize("cls, var, raw, message", [
    (RegistrySettings, "XDSI_REGISTRY_PORT", "abc", "[registry] port: expected an integer, got 'abc'"),
    (RegistrySettings, "XDSI_REGISTRY_FEED_PORT", "70000", "[registry] feed_port = 70000: must be from 0 to 65535"),
    (RegistrySettings, "XDSI_REGISTRY_VALIDATE_CODES", "maybe",
     "[registry] validate_codes: expected true or false, got 'maybe'"),
    (RepositorySettings, "XDSI_REPOSITORY_WORKERS", "0", "[repository] workers = 0: must be at least 1"),
    (RepositorySettings, "XDSI_REPOSITORY_REGISTRY_TIMEOUT", "soon",
     "[repository] registry_timeout: expected a number, got 'soon'"),
    (PixSettings, "XDSI_PIX_LOWER_THRESHOLD", "90", "[pix] lower_threshold must not be above upper_threshold"),
    (PixSettings, "XDSI_PIX_SUBSCRIBERS", "[1]", "[pix] subscribers[0]: expected a string, got 1"),
    (ImagingSourceSettings, "XDSI_IMAGING_SOURCE_DUPLICATE_POLICY", "sometimes",
     "[imaging_source] duplicate_policy = 'sometimes': use one of replace, ignore, reject"),
    (ImagingSourceSettings, "XDSI_IMAGING_SOURCE_MOVE_DESTINATIONS", '{ PACS = "10.0.0.5" }',
     "[imaging_source] move_destinations.PACS = '10.0.0.5': expected host:port"),
    (ImagingSourceSettings, "XDSI_IMAGING_SOURCE_CLASS_CODE", '["IMAGES"]',
     "[imaging_source] class_code: expected 3 values, got 1"),
    (ConsumerSettings, "XDSI_CONSUMER_REPORTS", "sometimes",
     "[consumer] reports = 'sometimes': use one of skip, store, oru"),
    (ConsumerSettings, "XDSI_CONSUMER_RETRIEVE_ORDER", '["ftp"]',
     "[consumer] retrieve_order: ['ftp']; use some of ['rad69', 'c-move', 'c-get']"),
    (ConsumerSettings, "XDSI_CONSUMER_LOCAL_PACS", "127.0.0.1:104",
     "[consumer] local_pacs = '127.0.0.1:104': expected AE@host:port"),
    (ConsumerSettings, "XDSI_CONSUMER_PIX", "pix.example", "[consumer] pix = 'pix.example': expected host:port"),
    (ConsumerSettings, "XDSI_CONSUMER_WORKERS", "0", "[consumer] workers = 0: must be at least 1"),
    # an unlimited maximum PDU (0) would leave memory to the peer's word
    (ImagingSourceSettings, "XDSI_IMAGING_SOURCE_MAX_PDU_BYTES", "0",
     "[imaging_source] max_pdu_bytes = 0: must be at least 4096"),
    (ConsumerSettings, "XDSI_CONSUMER_DICOM_MAX_PDU_BYTES", "0",
     "[consumer] dicom_max_pdu_bytes = 0: must be at least 4096"),
    (ConsumerSettings, "XDSI_CONSUMER_ACCESSION_MODE", "none",
     "[consumer] accession_mode = 'none': use one of auto, prefix, issuer"),
])
def test_a_wrong_value_is_refused_in_one_line_naming_its_key(cls, var, raw, message):
    with pytest.raises(ConfigError) as refused:
        build_settings(cls, load(environ={var: raw}))
    assert str(refused.value) == message


def test_a_file_value_of_the_wrong_type_is_refused_and_a_whole_number_serves_as_a_float(tmp_path):
    toml = tmp_path / "xdsi.toml"
    toml.write_text('[repository]\nrecovery_seconds = 5\nport = "8020"\n')
    with pytest.raises(ConfigError, match=r"^\[repository\] port: expected an integer, got '8020'$"):
        build_settings(RepositorySettings, load(toml, environ={}))
    toml.write_text("[repository]\nregistry_timeout = 5\n")
    timeout = build_settings(RepositorySettings, load(toml, environ={})).registry_timeout
    assert timeout == 5.0 and isinstance(timeout, float)


def test_a_settings_class_follows_the_declared_keys_and_their_types():
    @dataclasses.dataclass(frozen=True)
    class Misread:
        SECTION: ClassVar[str] = "repository"
        recovery_seconds: float         # declared as a whole number of seconds

    @dataclasses.dataclass(frozen=True)
    class Unknown:
        SECTION: ClassVar[str] = "repository"
        colour: str

    with pytest.raises(TypeError, match="recovery_seconds: its declared default is of type int"):
        build_settings(Misread, load(environ={}))
    with pytest.raises(TypeError, match=r"colour: \[repository\] declares no such key"):
        build_settings(Unknown, load(environ={}))


@pytest.mark.parametrize("actor, var, raw, message", [
    ("registry", "XDSI_REGISTRY_MAX_QUERY_RESULTS", "many",
     "[registry] max_query_results: expected an integer, got 'many'"),
    ("repository", "XDSI_REPOSITORY_THREADS", "0", "[repository] threads = 0: must be at least 1"),
    ("pix", "XDSI_PIX_WORKERS", "two", "[pix] workers: expected an integer, got 'two'"),
    ("imaging-source", "XDSI_IMAGING_SOURCE_DUPLICATE_POLICY", "sometimes",
     "[imaging_source] duplicate_policy = 'sometimes': use one of replace, ignore, reject"),
    ("consumer", "XDSI_CONSUMER_DICOM_SOURCES", '{ XDSI_SOURCE = "nowhere" }',
     "[consumer] dicom_sources.XDSI_SOURCE = 'nowhere': expected host:port"),
])
def test_an_actor_with_a_wrong_value_exits_with_one_line_before_it_listens(tmp_path, actor, var, raw, message):
    section = actor.replace("-", "_").upper()
    ports = {f"XDSI_{section}_{key.upper()}": str(free_port()) for key in DEFAULTS[actor.replace("-", "_")]
             if key.endswith("port") and not key.startswith("pix")}
    # No database: a settings check that came after the database (or a port) would fail otherwise.
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDSI_")}
    env.update(XDSI_DATA_DIR=str(tmp_path), XDSI_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none", **ports)
    env[var] = raw
    done = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "serve", actor], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"xdsi: {message}\n"
    assert "listening" not in done.stdout
