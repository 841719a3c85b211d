"""compose.yaml checked structurally (no Docker engine here): services, commands, ports, settings."""
import re
import tomllib
from importlib.metadata import entry_points

import yaml

from affinity_domain.config import DEFAULTS, TOP_LEVEL_ENV, load
from tests.services import ROOT

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
ACTORS = {ep.name for ep in entry_points(group="xdsi.actors")}
SERVICES = {name: s for name, s in COMPOSE["services"].items() if name != "postgres"}


def section(actor: str) -> str:
    return actor.replace("-", "_")


def test_one_service_per_installed_actor_running_xdsi_serve():
    assert {s["command"][1] for s in SERVICES.values()} == ACTORS
    for name, service in SERVICES.items():
        assert service["command"][:1] == ["serve"] and service["command"][1] == name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "healthcheck" in service


def test_environment_names_configuration_keys_that_exist():
    env_names = {var for var in TOP_LEVEL_ENV.values()}
    env_names |= {f"XDSI_{sec.upper()}_{key.upper()}" for sec, keys in DEFAULTS.items() for key in keys}
    for name, service in SERVICES.items():
        for var in service["environment"]:
            assert var in env_names, f"{name}: {var} is not a configuration key"


def served_ports(actor: str) -> set[int]:
    """The ports an actor says it serves on (its endpoint table, as ``xdsi up`` prints it)."""
    ep = next(ep for ep in entry_points(group="xdsi.actors") if ep.name == actor)
    return {int(re.search(r":(\d+)", where).group(1)) for _, where in ep.load().endpoints(load())}


def test_published_ports_are_the_served_ones():
    for name, service in SERVICES.items():
        configured = served_ports(name)
        published = {int(p.split(":")[1]) for p in service["ports"]}
        assert published == configured, name
        assert all(p.split(":")[0] == p.split(":")[1] for p in service["ports"])
        probe = " ".join(service["healthcheck"]["test"])
        assert any(re.search(rf"\b{port}\b", probe) for port in configured), name


def test_urls_between_services_use_service_names_and_configured_ports():
    for name, service in SERVICES.items():
        for var, value in service["environment"].items():
            if isinstance(value, str) and value.startswith("http://"):
                host, port, path = re.match(r"http://([^:/]+):(\d+)(/\S*)", value).groups()
                assert host in SERVICES
                assert int(port) == DEFAULTS[section(host)]["port"]
                assert path == DEFAULTS[section(host)]["path"]


def test_image_contains_every_actor_package():
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert f"COPY {pattern.rstrip('*')} {pattern.rstrip('*')}" in dockerfile
