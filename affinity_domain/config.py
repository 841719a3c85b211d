"""Configuration: one TOML file plus ``XDSI_<SECTION>_<KEY>`` environment overrides.

Each actor reads its own section and ``[domain]``. Defaults live here so that the
documented keys (a contract with integrators' scripts) have exactly one home.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "domain": {
        "assigning_authority": "1.3.6.1.4.1.21367.2005.13.20.1000",
        "home_community_id": "urn:oid:1.3.6.1.4.1.21367.13.70.200",
    },
    "database": {
        "url": "",
    },
    "registry": {
        "host": "127.0.0.1",
        "port": 8010,
        "path": "/registry",
        "feed_host": "127.0.0.1",
        "feed_port": 2577,
        "threads": 8,
        "workers": 2,          # HTTP worker processes (one per core)
        "max_request_bytes": 20 * 1024 * 1024,
        "max_query_results": 10000,
        # Empty: the NIST test kit's code sets (../shared/nist-testkit/codes.xml), if present.
        "codes_file": "",
        "validate_codes": True,
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
    },
}

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


def _env_value(raw: str, default: Any) -> Any:
    """Environment strings take the type of the default (TOML syntax for lists and tables)."""
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, (list, dict)):
        return tomllib.loads(f"v = {raw}")["v"]
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
    directory = data_dir or env.get("XDSI_DATA_DIR") or sections.get("paths", {}).get("data_dir") or ".xdsi"
    return Config(sections=sections, data_dir=Path(directory))


class ConfigError(Exception):
    """A configuration or start-up problem to report in one line, not as a traceback."""
