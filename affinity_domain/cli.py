"""The ``xdsi`` command. Actors plug in through the ``xdsi.actors`` entry points, so this
shared package never imports them."""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from pathlib import Path

from . import config as config_mod


def actors() -> dict:
    return {ep.name: ep for ep in entry_points(group="xdsi.actors")}


def section_of(actor: str) -> str:
    """An actor's configuration section (``imaging-source`` is ``[imaging_source]``)."""
    return actor.replace("-", "_")


def _certs(cfg, args) -> int:
    from .certs import run   # cryptography is only imported for this command
    return run(cfg, args)


def _tokens(cfg, args) -> int:
    from .tokens import run
    return run(cfg, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xdsi", description="An IHE XDS-I.b affinity domain.")
    parser.add_argument("--config", help="TOML configuration file (default: $XDSI_CONFIG or ./xdsi.toml)")
    parser.add_argument("--data-dir", help="data directory (default: $XDSI_DATA_DIR or ./.xdsi)")
    sub = parser.add_subparsers(dest="command", required=True)
    available = actors()
    serve = sub.add_parser("serve", help="run one actor in the foreground")
    serve.add_argument("actor", choices=sorted(available))  # an unusable one is reported below
    sub.add_parser("up", help="run every installed actor in the foreground")
    sub.add_parser("status", help="which actors of the data dir are up and healthy (exit 0: all of them)")
    certs = sub.add_parser("certs", help="make a test CA, node and client certificates for [tls]")
    certs.add_argument("--out", required=True, type=Path, help="directory for the PEM files")
    certs.add_argument("--host", action="append", default=[],
                       help="another name or address for the node certificate (repeatable)")
    certs.add_argument("--force", action="store_true", help="replace the files already there")
    certs.set_defaults(run=_certs)
    token = sub.add_parser("token", help="bearer tokens of the JSON APIs (PIX review and admin, consumer)")
    tsub = token.add_subparsers(dest="token_command", required=True)
    add = tsub.add_parser("add", help="make a token; it is printed once, only its hash is kept")
    add.add_argument("name", help="who holds it (a decision made with it is theirs)")
    add.add_argument("--role", required=True, choices=["reader", "reviewer", "operator"])
    tsub.add_parser("list", help="the tokens' names and roles")
    remove = tsub.add_parser("remove", help="revoke a token (the doors stop taking it within seconds)")
    remove.add_argument("name")
    token.set_defaults(run=_tokens)
    loaded = {}
    for name, ep in available.items():
        try:
            loaded[name] = ep.load()
        except ImportError as e:  # one broken actor must not take the others' commands down
            print(f"xdsi: actor {name} is not usable: {e}", file=sys.stderr)
    # Commands that are not actors (``xdsi demo``) plug in the same way.
    extras = [ep.load() for ep in entry_points(group="xdsi.commands")]
    for actor in [*loaded.values(), *extras]:
        if hasattr(actor, "add_commands"):
            actor.add_commands(sub)
    args = parser.parse_args(argv)
    cfg = config_mod.load(args.config, args.data_dir)
    try:
        if args.command == "serve":
            if args.actor not in loaded:
                return 2
            from . import secure_node
            from .status import running
            # ITI-19: every door and client of this process follows the actor's [tls] (secure_node).
            node = secure_node.setup(cfg, section_of(args.actor))
            endpoints = [(label, secure_node.shown(where, node)) for label, where in loaded[args.actor].endpoints(cfg)]
            with running(cfg.data_dir, args.actor, endpoints):
                return loaded[args.actor].serve(cfg) or 0
        if args.command == "status":
            from .status import report
            return report(cfg.data_dir, list(available), cfg)
        if args.command == "up":
            from .up import run_all
            return run_all(cfg, loaded)
        if args.command != "certs":      # a command that calls a door (xdsi pix review, xdsi demo) as this node
            from . import secure_node
            secure_node.setup(cfg, section_of(args.command))
        return args.run(cfg, args) or 0
    except KeyboardInterrupt:
        return 0
    except config_mod.ConfigError as e:
        print(f"xdsi: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
