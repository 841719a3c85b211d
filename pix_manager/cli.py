"""``xdsi serve pix`` and ``xdsi pix review|unlink|rekey|train …``."""
from __future__ import annotations

import argparse
import json
import logging
import os
import urllib.request

from affinity_domain import audit, db, health as probes, hl7, http_auth, logs, metrics, secure_node, serving, status
from affinity_domain.audit import hl7v2 as audit_hl7
from affinity_domain.config import Config, build_settings
from affinity_domain.workers import Supervisor, WorkerSettings
from affinity_domain.hl7 import Hl7Error
from affinity_domain.mllp import MllpServer, limits_of

from . import blocking, http_door, linkage, mllp_door, training
from .delivery import Deliverer
from .index import PatientIndex
from .settings import PixSettings
from .store import Store

log = logging.getLogger("xdsi.pix")


class PixActor:
    name = "pix"

    def endpoints(self, config: Config) -> list[tuple[str, str]]:
        return _endpoints(build_settings(PixSettings, config))

    def serve(self, config: Config) -> int:
        s = build_settings(PixSettings, config)   # a configuration mistake stops us before anything starts
        logs.setup("pix")
        url = db.database_url(config)
        db.migrate(url, "pix", "pix_manager")

        def oversize(reason: str) -> bytes:
            return hl7.ack(b"", "AR", Hl7Error(reason, code="100"), application="XDSI_PIX")

        health = serving.observability(config.data_dir, self.name)
        # Bound before forking: every worker process accepts on the same socket.
        mllp = serving.bind(lambda: MllpServer((s.host, s.port), None, oversize,
                                               limits=limits_of(s, "mllp_", s.max_message_bytes)), s.host, s.port)
        audit.start(config, self.name)
        workers = serving.fork_workers(s.workers - 1, health)
        pool = db.open_pool(url, "pix", max_size=16)
        store = Store(pool)
        index = PatientIndex(store, s)
        mllp.handler = metrics.counted_mllp(audit_hl7.audited(mllp_door.handler(index, s.facility_authorities,
                                                                                s.hl7_senders, s.loopback_senders),
                                                              s.host),
                                            metrics.hl7_transaction({"ADT": "ITI-8", "QBP": "ITI-9"}))
        if workers is None:  # a forked worker: MLLP only; skip the parent's atexit hooks on exit
            health.register(probes.threads(mllp=mllp.start()))
            serving.wait_for_stop()
            mllp.shutdown()
            pool.close()
            health.retire()
            audit.stop(activity=False)
            os._exit(0)
        door, tokens = http_auth.protect(http_door.app(index, s.max_json_bytes), http_door.RULES, config, url, "pix")
        app = serving.with_status(door, health)
        http = serving.http_server(app, serving.listen(s.http_host, s.http_port), 4,
                                   serving.http_limits(s, s.max_json_bytes))
        listener = mllp.start()
        # The outbox's deliverer (ITI-8 forwards to the registry, ITI-10 to subscribers).
        supervisor = Supervisor(build_settings(WorkerSettings, config),
                                lambda state: status.record_workers(config.data_dir, self.name, state))
        supervisor.add("outbox", Deliverer(store).step, queue=store.pending, quarantined=store.quarantined)
        supervisor.start()
        health.register(probes.threads(mllp=listener))
        health.register(supervisor.state)
        for label, where in _endpoints(s):
            log.info("listening", extra={"endpoint": label, "at": where, "workers": len(workers) + 1})
        serving.run_until_stopped([http], [lambda: serving.stop_workers(workers), mllp.shutdown, supervisor.stop,
                                           pool.close, tokens.close, health.retire, audit.stop])
        return 0

    def add_commands(self, sub) -> None:
        pix = sub.add_parser("pix", help="PIX manager administration (authenticated by $XDSI_TOKEN)")
        psub = pix.add_subparsers(dest="pix_command", required=True)
        review = psub.add_parser("review", help="the review queue: list, show, link, break")
        review.add_argument("action", choices=["list", "show", "link", "break"])
        review.add_argument("item", nargs="?", type=int)
        review.add_argument("--by", help=argparse.SUPPRESS)   # the decision is the token's ($XDSI_TOKEN)
        review.add_argument("--status", default="open", help="open | linked | broken | '' (all)")
        review.set_defaults(run=_reachable(_review))
        unlink = psub.add_parser("unlink", help="undo a wrong link: the identity becomes a person of its own")
        unlink.add_argument("domain", help="the identity's assigning authority (OID)")
        unlink.add_argument("pid", help="the identity's id in that domain")
        unlink.add_argument("--by", help=argparse.SUPPRESS)
        unlink.set_defaults(run=_reachable(_unlink))
        match = psub.add_parser("match", help="a dry run: who these demographics would match, registering nothing")
        for name in ("family", "given", "dob", "sex", "postal-code", "city", "street", "phone", "national-id"):
            match.add_argument(f"--{name}", default="")
        match.add_argument("--domain", default="", help="as an identity of this domain (OID)")
        match.add_argument("--limit", type=int, default=10)
        match.set_defaults(run=_reachable(_match))
        rekey = psub.add_parser("rekey", help="recompute the index's blocking keys after [pix] blocking_keys changed")
        rekey.set_defaults(run=_rekey)
        train = psub.add_parser("train", help="estimate the linker's parameters (m, u, prior, name frequencies) "
                                              "from the index; running managers load them")
        train.set_defaults(run=_train)


def _endpoints(s: PixSettings) -> list[tuple[str, str]]:
    return [("ITI-8/ITI-9 (MLLP)", f"{s.host}:{s.port}"),
            ("review and admin (HTTP)", f"http://{s.http_host}:{s.http_port}/review")]


def _rekey(config: Config, args) -> int:
    keys = build_settings(PixSettings, config).blocking_keys
    url = db.database_url(config)
    db.migrate(url, "pix", "pix_manager")
    with db.open_pool(url, "pix", max_size=2) as pool:
        done = Store(pool).rekey(lambda d: blocking.keys(d, keys))
    print(f"blocking keys recomputed for {done} identities ({', '.join(keys)})")
    return 0


def _train(config: Config, args) -> int:
    build_settings(PixSettings, config)
    url = db.database_url(config)
    db.migrate(url, "pix", "pix_manager")
    with db.open_pool(url, "pix", max_size=2) as pool:
        store = Store(pool)
        records = list(store.demographics())
        if len(records) < training.MIN_IDENTITIES:
            print(f"{len(records)} identities: too few to learn from; the parameters in use stay")
            return 0
        model = training.train(records, f"{len(records)} identities")
        store.save_model(model.as_dict(), len(records))
    print(f"trained on {len(records)} identities: prior match probability {model.prior:.3g}")
    for name in model.m:
        weights = zip(linkage.LEVELS[name], model.level_weights(name))
        print(f"  {name:12} " + "  ".join(f"{lv} {w:+.1f}" for lv, w in weights))
    return 0


def _reachable(command):
    """A PIX manager that is not running is one line, not a traceback."""
    def run(config: Config, args) -> int:
        try:
            return command(config, args)
        except urllib.error.URLError as e:
            print(f"xdsi: the PIX manager at {_admin(config)} is not reachable: {e.reason}")
            return 1
    return run


def _admin(config: Config) -> str:
    s = build_settings(PixSettings, config)
    return secure_node.url(f"http://{s.http_host}:{s.http_port}")


def _review(config: Config, args) -> int:
    base = _admin(config)
    if args.action == "list":
        with secure_node.urlopen(http_auth.authorized(f"{base}/review?status={args.status}")) as r:
            for item in json.load(r):
                print(f"#{item['id']:<5} {item['status']:<7} score {item['score']:5.1f}  "
                      f"{item['identity_pid']}@{item['identity_domain']}  ~  "
                      f"{item['candidate_pid']}@{item['candidate_domain']}\n        {item['explanation']}")
        return 0
    if args.action == "show":
        if args.item is None:
            print("xdsi pix review show ITEM")
            return 2
        try:
            with secure_node.urlopen(http_auth.authorized(f"{base}/review/{args.item}")) as r:
                item = json.load(r)
        except urllib.error.HTTPError as e:
            print(f"xdsi: {json.load(e).get('error')}")
            return 1
        _show(item)
        return 0
    if args.item is None:
        print("xdsi pix review link|break ITEM")
        return 2
    return _post(f"{base}/review/{args.item}/{args.action}", {})


def _show(item: dict) -> None:
    print(f"review item #{item['id']}: {item['status']}, score {item['score']:.1f}"
          + (f", decided by {item['decided_by']} at {item['decided_at']}" if item.get("decided_by") else ""))
    print(f"  {item['explanation']}")
    left, right = item["identity_demographics"], item["candidate_demographics"]
    print(f"  {'':12} {item['identity_pid'] + '@' + item['identity_domain']:40} "
          f"{item['candidate_pid'] + '@' + item['candidate_domain']}")
    for name in left:
        print(f"  {name:12} {left[name] or '-':40} {right.get(name) or '-'}")
    print(f"  {'person':12} {item['identity_person'].split('^')[0]:40} {item['candidate_person'].split('^')[0]}")


def _match(config: Config, args) -> int:
    body = {"family": args.family, "given": args.given, "birth_date": args.dob, "sex": args.sex,
            "postal_code": args.postal_code, "city": args.city, "street": args.street, "phone": args.phone,
            "national_id": args.national_id, "domain": args.domain, "limit": args.limit}
    request = http_auth.authorized(f"{_admin(config)}/match", method="POST", data=json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"})
    try:
        with secure_node.urlopen(request) as r:
            found = json.load(r)
    except urllib.error.HTTPError as e:
        print(f"xdsi: {json.load(e).get('error')}")
        return 1
    print(f"would be: {found['action']} ({len(found['candidates'])} candidates; nothing registered)")
    for c in found["candidates"]:
        print(f"  {c['score']:6.1f} {c['band']:9} {c['pid']}@{c['domain']}  person {c['person'].split('^')[0]}\n"
              f"         {c['explanation']}")
    return 0


def _unlink(config: Config, args) -> int:
    return _post(f"{_admin(config)}/persons/unlink", {"domain": args.domain, "pid": args.pid})


def _post(url: str, body: dict) -> int:
    request = http_auth.authorized(url, method="POST", data=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"})
    try:
        with secure_node.urlopen(request) as r:
            print(json.load(r)["result"])
        return 0
    except urllib.error.HTTPError as e:
        print(f"xdsi: {json.load(e).get('error')}")
        return 1


actor = PixActor()
