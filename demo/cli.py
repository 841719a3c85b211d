"""``xdsi demo``: plugs into the command line like an actor's subcommands do."""
from __future__ import annotations

from affinity_domain.config import Config


class DemoCommand:
    def add_commands(self, sub) -> None:
        d = sub.add_parser("demo",
                           help="start the domain and tell its story with sample data; exit 0 if it all happened")
        d.add_argument("--instances", type=int, default=300, help="CT instances in the demo study")
        d.add_argument("--tls", action="store_true",
                       help="every door and client on mutual TLS (ITI-19): with [tls] if set, else with a test "
                            "PKI made in a temporary directory")
        d.set_defaults(run=_run)


def _run(config: Config, args) -> int:
    from .story import run
    if args.tls:
        from .story import tls_on
        tls_on()
    return run(config, args.instances)


command = DemoCommand()
