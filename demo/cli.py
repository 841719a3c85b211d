"""``xdsi demo``: plugs into the command line like an actor's subcommands do."""
from __future__ import annotations

from affinity_domain.config import Config


class DemoCommand:
    def add_commands(self, sub) -> None:
        d = sub.add_parser("demo",
                           help="start the domain and tell its story with sample data; exit 0 if it all happened")
        d.add_argument("--instances", type=int, default=300, help="CT instances in the demo study")
        d.set_defaults(run=_run)


def _run(config: Config, args) -> int:
    from .story import run
    return run(config, args.instances)


command = DemoCommand()
