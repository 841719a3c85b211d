"""Imaging source benchmark: C-STORE intake and C-MOVE retrieval as ratios to DCMTK measured in
the same run (intake by a source with the default ``durability = "durable"``, by one with
``"fast"``, and by storescp, which syncs nothing, alone and followed by a ``sync``), RAD-69
throughput (read by our SOAP client, which spools each part to a file, and by curl, which reads
the reply into nothing), and a large study's manifest built and published.

    python -m bench.imaging_source [--instances 500] [--manifest-instances 5000] [--repeat 3] [--tls]

With ``--tls`` (ITI-19) every actor runs with ``[tls]`` (a test PKI made for the run), and the intake
figures are C-STORE over mutual TLS: DCMTK storescu ``+tls`` into our SCP and into storescp ``+tls``.

Starts PostgreSQL (embedded, or $XDSI_DATABASE_URL's server), the registry, the repository and
the imaging source as ``xdsi serve`` processes, a PIX stand-in (the tests' one), and DCMTK's
storescp and dcmqrscp as the baselines; every DICOM peer runs with TCP_NODELAY=1.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]

from lxml import etree  # noqa: E402

from affinity_domain import ns  # noqa: E402
from tests.imaging_source import source_dicom as dd  # noqa: E402
from tests.imaging_source import source_pix  # noqa: E402
from affinity_domain import config as config_mod  # noqa: E402
from affinity_domain import db  # noqa: E402
from affinity_domain.soap_client import SoapClient  # noqa: E402
from tests.services import (SOURCE_PEERS, create_database, drop_database, free_port, fresh_database,  # noqa: E402
                            wait_for_port)

ENV = dict(os.environ, TCP_NODELAY="1")


def timed(*cmd) -> float:
    t = time.perf_counter()
    out = subprocess.run(list(map(str, cmd)), env=ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr[-2000:]}")
    return elapsed


def keeping(directory: Path, files: list[Path], durable: bool) -> float:
    """Seconds per instance the source's own store and journal take to keep these files (FileStore
    put, journal line), synced or not: the disk's share of a C-STORE, without DICOM."""
    from affinity_domain.content import FileStore
    from imaging_source.indexer import Journal
    store = FileStore(directory, durable)
    journal = Journal(directory / "intake.journal", durable)
    data = [f.read_bytes() for f in files]
    line = b"x" * 800 + b"\n"                 # about a journal line's size
    t = time.perf_counter()
    for d in data:
        store.put_bytes(d)
        journal.append(line)
    elapsed = time.perf_counter() - t
    journal.close()
    return elapsed / len(files)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(cmd, env, port, log) -> subprocess.Popen:
    p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=ROOT)
    wait_for_port(port, p)
    return p


def dcmqrscp_config(path: Path, port: int, store: Path, dest_port: int) -> None:
    store.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""NetworkTCPPort = {port}
MaxPDUSize = 16384
MaxAssociations = 16
HostTable BEGIN
movedest = (MOVEDEST, 127.0.0.1, {dest_port})
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
DCMQR {store} RW (100000, 4096mb) ANY
AETable END
""")


def rad69_request(study_uid: str, docs: list[tuple[str, str]], repository_id: str) -> etree._Element:
    xml = (f'<r:RetrieveImagingDocumentSetRequest xmlns:r="{ns.IHERAD}" xmlns:x="{ns.XDSB}">'
           f'<r:StudyRequest studyInstanceUID="{study_uid}">')
    series: dict[str, list[str]] = {}
    for s, sop in docs:
        series.setdefault(s, []).append(sop)
    for s, sops in series.items():
        xml += f'<r:SeriesRequest seriesInstanceUID="{s}">' + "".join(
            f"<x:DocumentRequest><x:RepositoryUniqueId>{repository_id}</x:RepositoryUniqueId>"
            f"<x:DocumentUniqueId>{u}</x:DocumentUniqueId></x:DocumentRequest>" for u in sops) + "</r:SeriesRequest>"
    xml += ("</r:StudyRequest><r:TransferSyntaxUIDList><r:TransferSyntaxUID>1.2.840.10008.1.2.1</r:TransferSyntaxUID>"
            "</r:TransferSyntaxUIDList></r:RetrieveImagingDocumentSetRequest>")
    return etree.fromstring(xml)


def tls_setup(work: Path) -> tuple[list[str], list[str], dict[str, str]]:
    """A test PKI for the run: DCMTK's +tls options as client (storescu) and as server (storescp), the
    actors' XDSI_TLS_* environment; this process (the PIX stand-in, the ITI-8 feed) becomes a TLS node."""
    from affinity_domain import certs, secure_node
    from affinity_domain.tls import TlsSettings
    pki = work / "pki"
    certs.make(pki, ["localhost"])
    paths = {"cert": str(pki / "node.pem"), "key": str(pki / "node.key"), "ca": str(pki / "ca.pem")}
    secure_node.use(TlsSettings(**paths, require_client_cert=True, allow_plaintext=False, handshake_timeout=10.0))
    scu = ["+tls", str(pki / "client.key"), str(pki / "client.pem"), "+cf", paths["ca"]]
    scp = ["+tls", paths["key"], paths["cert"], "+cf", paths["ca"]]
    return scu, scp, {f"XDSI_TLS_{k.upper()}": v for k, v in paths.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=500, help="CT instances in the intake/retrieve study")
    ap.add_argument("--manifest-instances", type=int, default=5000,
                    help="instances of the study whose manifest is timed")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the best is kept)")
    ap.add_argument("--only", default="intake,parallel,move,rad69,manifest",
                    help="comma-separated figures to measure besides intake, which the others need: "
                         "parallel (several associations at once), move, rad69, manifest")
    ap.add_argument("--associations", type=int, default=4,
                    help="storescu processes sending at once for the parallel intake figure")
    ap.add_argument("--tls", action="store_true",
                    help="mutual TLS everywhere; measures the intake figures (intake, parallel) only")
    args = ap.parse_args()
    only = set(args.only.split(",")) & ({"intake", "parallel"} if args.tls else {"intake", "parallel", "move",
                                                                                   "rad69", "manifest"})

    work = Path(tempfile.mkdtemp(prefix="xbis", dir="/tmp"))
    procs, pix, fast_database = [], None, None
    log = open(work / "services.log", "ab")
    database_in_use = contextlib.ExitStack()
    try:
        database = database_in_use.enter_context(fresh_database(work))
        scu, scp, tls_env = tls_setup(work) if args.tls else ([], [], {})

        pix = source_pix.StandIn.start()
        reg, feed, repo, dicom, http = (free_port() for _ in range(5))
        dest, dcmtk_scp, dcmqr = free_port(), free_port(), free_port()
        env = dict(os.environ, XDSI_DATABASE_URL=database, XDSI_DATA_DIR=str(work),
                   XDSI_REGISTRY_PORT=str(reg), XDSI_REGISTRY_FEED_PORT=str(feed), XDSI_REPOSITORY_PORT=str(repo),
                   XDSI_REPOSITORY_STORE_DIR=str(work / "repo"),
                   XDSI_REPOSITORY_REGISTRY_URL=f"http://127.0.0.1:{reg}/registry",
                   XDSI_IMAGING_SOURCE_DICOM_PORT=str(dicom), XDSI_IMAGING_SOURCE_PORT=str(http),
                   XDSI_IMAGING_SOURCE_REPOSITORY_URL=f"http://127.0.0.1:{repo}/repository",
                   XDSI_IMAGING_SOURCE_PIX_PORT=str(pix.port), XDSI_IMAGING_SOURCE_QUIET_SECONDS="86400",
                   XDSI_IMAGING_SOURCE_STORE_DIR=str(work / "images"), XDSI_IMAGING_SOURCE_MIN_FREE_BYTES="0",
                   XDSI_IMAGING_SOURCE_MOVE_DESTINATIONS=f'{{ MOVEDEST = "127.0.0.1:{dest}" }}',
                   XDSI_IMAGING_SOURCE_PEERS=SOURCE_PEERS, **tls_env)
        cli = [sys.executable, "-m", "affinity_domain.cli", "serve"]
        procs.append(start(cli + ["registry"], env, reg, log))
        procs.append(start(cli + ["repository"], env, repo, log))
        procs.append(start(cli + ["imaging-source"], env, dicom, log))
        wait_for_port(http, procs[-1])
        # The same source with durability = "fast", on its own database and store.
        fast_dicom = free_port()
        fast_database = create_database(database, "xdsi_bench_fast")
        fast_env = dict(env, XDSI_DATABASE_URL=fast_database,
                        XDSI_IMAGING_SOURCE_DURABILITY="fast", XDSI_IMAGING_SOURCE_DICOM_PORT=str(fast_dicom),
                        XDSI_IMAGING_SOURCE_PORT=str(free_port()), XDSI_IMAGING_SOURCE_STORE_DIR=str(work / "fast"))
        fast = start(cli + ["imaging-source"], fast_env, fast_dicom, log)
        procs.append(fast)
        (work / "dest").mkdir()
        (work / "dcmtk-in").mkdir()
        procs.append(start(["/usr/bin/storescp", "-aet", "MOVEDEST", "+uf", *scp, "-od", str(work / "dest"), str(dest)],
                           ENV, dest, log))
        procs.append(start(["/usr/bin/storescp", "-aet", "STORESCP", "+uf", *scp, "-od", str(work / "dcmtk-in"),
                            str(dcmtk_scp)], ENV, dcmtk_scp, log))
        dcmqrscp_config(work / "dcmqrscp.cfg", dcmqr, work / "dcmqr", dest)
        procs.append(start(["/usr/bin/dcmqrscp", "-c", str(work / "dcmqrscp.cfg")], ENV, dcmqr, log))

        def line(label, ours, theirs, unit, what="DCMTK"):
            print(f"{label:<52} ours {ours:>9.1f} {unit:<6} {what} {theirs:>9.1f} {unit:<6} ratio {ours / theirs:.3f}",
                  flush=True)

        local = f"B{uuid.uuid4().hex[:8]}"
        domain_id = pix.register(local, dd.LOCAL_ISSUER)

        registry = type("Registry", (), {"feed": ("127.0.0.1", feed)})
        source_pix.feed_registry(registry, domain_id)

        # 1. intake: storescu -> our SCP, durable and fast, vs -> DCMTK storescp, alone and with a
        # sync after it (DCMTK syncs nothing: the sync is what its instances cost to be on disk).
        # A fresh study each run for ours; a sync before each storescp run flushes what the others left.
        n = args.instances
        rates: dict[str, list[float]] = {"durable": [], "fast": [], "storescp": [], "storescp + sync": []}
        cpu: dict[str, list[float]] = {"durable": [], "fast": []}
        disk: dict[str, list[float]] = {"synced": [], "unsynced": []}
        study = None
        for r in range(args.repeat):
            for label, port, proc in (("durable", dicom, procs[2]), ("fast", fast_dicom, fast)):
                sent = dd.make_study(work / f"study-{label}{r}", local, series=5, per_series=n // 5)
                study = sent if label == "durable" else study
                timed("sync")                        # each configuration starts with nothing dirty
                before = cpu_seconds(proc.pid)
                t = timed("/usr/bin/storescu", "-aec", "XDSI_SOURCE", *scu, "127.0.0.1", port, *sent.files)
                cpu[label].append((cpu_seconds(proc.pid) - before) / len(sent.files) * 1e3)
                rates[label].append(len(sent.files) / t)
            timed("sync")
            t_dcmtk = timed("/usr/bin/storescu", "-aec", "STORESCP", *scu, "127.0.0.1", dcmtk_scp, *study.files)
            t_sync = timed("sync")
            rates["storescp"].append(len(study.files) / t_dcmtk)
            rates["storescp + sync"].append(len(study.files) / (t_dcmtk + t_sync))
            # The same bytes kept by FileStore and Journal alone, synced and not (fresh copies:
            # the content store keeps one file per hash).
            copies = dd.make_study(work / f"kept{r}", local, series=5, per_series=n // 5).files
            timed("sync")
            disk["synced"].append(keeping(work / f"kept-synced{r}", copies, True))
            disk["unsynced"].append(keeping(work / f"kept-unsynced{r}", copies, False))
        best = {label: max(values) for label, values in rates.items()}
        count = len(study.files)
        for ours in ("durable", "fast"):
            for theirs in ("storescp", "storescp + sync"):
                line(f"C-STORE intake{' TLS' if args.tls else ''}, {count} CT, {ours} vs {theirs} (/s)", best[ours],
                     best[theirs], "/s", theirs.split()[0])
        for label in ("durable", "fast"):
            print(f"{f'  imaging source ({label}) CPU per instance received':<52} {min(cpu[label]):.2f} ms "
                  f"(wall {1e3 / best[label]:.2f} ms)", flush=True)
        # What fsync alone costs on this disk, and so the best ratio a durable source could reach
        # if everything else cost what the fast one does.
        synced, unsynced = min(disk["synced"]) * 1e3, min(disk["unsynced"]) * 1e3
        bound = 1e3 / (1e3 / best["fast"] + synced - unsynced)
        print(f"{'  keeping an instance on this disk (store + journal)':<52} synced {synced:.2f} ms, "
              f"not synced {unsynced:.2f} ms: fsync costs {synced - unsynced:.2f} ms", flush=True)
        print(f"{'  fast + that fsync cost, vs storescp (/s)':<52} at best {bound:>9.1f} /s     ratio "
              f"{bound / best['storescp']:.3f}", flush=True)
        print("  every run (/s): " + "; ".join(f"{label} " + " ".join(f"{v:.0f}" for v in values)
                                               for label, values in rates.items())
              + "; fsync cost (ms) " + " ".join(f"{(a - b) * 1e3:.2f}"
                                                for a, b in zip(disk["synced"], disk["unsynced"])), flush=True)

        # 1b. several associations at once: the journal's fsyncs are shared (group commit)
        if "parallel" in only:
            k = args.associations
            best_parallel: dict[str, float] = {}
            for r in range(args.repeat):
                for label, ae, port in (("durable", "XDSI_SOURCE", dicom), ("fast", "XDSI_SOURCE", fast_dicom),
                                        ("storescp", "STORESCP", dcmtk_scp)):
                    sent = dd.make_study(work / f"parallel-{label}{r}", local, series=k, per_series=n // k)
                    groups = [sent.files[i::k] for i in range(k)]
                    timed("sync")
                    t = time.perf_counter()
                    running = [subprocess.Popen(["/usr/bin/storescu", "-aec", ae, *scu, "127.0.0.1", str(port),
                                                 *map(str, g)], env=ENV, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL) for g in groups]
                    if any(p.wait() != 0 for p in running):
                        raise RuntimeError(f"storescu to {label} failed")
                    elapsed = time.perf_counter() - t
                    best_parallel[label] = max(best_parallel.get(label, 0), len(sent.files) / elapsed)
                    if label == "storescp":
                        sync_rate = len(sent.files) / (elapsed + timed("sync"))
                        best_parallel["storescp + sync"] = max(best_parallel.get("storescp + sync", 0), sync_rate)
            for ours in ("durable", "fast"):
                for theirs in ("storescp", "storescp + sync"):
                    line(f"  {k} associations at once, {ours} vs {theirs} (/s)", best_parallel[ours],
                         best_parallel[theirs], "/s", theirs.split()[0])

        # 2. C-MOVE of the study to a DCMTK storescp: from us vs from dcmqrscp
        if "move" in only:
            timed("/usr/bin/storescu", "-aec", "DCMQR", "127.0.0.1", dcmqr, *study.files)
            ours_t, dcmtk_t = [], []
            for _ in range(args.repeat):
                ours_t.append(timed("/usr/bin/movescu", "-S", "-aec", "XDSI_SOURCE", "-aem", "MOVEDEST",
                                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.uid}",
                                    "127.0.0.1", dicom))
                dcmtk_t.append(timed("/usr/bin/movescu", "-S", "-aec", "DCMQR", "-aem", "MOVEDEST",
                                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.uid}",
                                     "127.0.0.1", dcmqr))
            line(f"C-MOVE of {len(study.files)} instances (instances/s)", len(study.files) / min(ours_t),
                 len(study.files) / min(dcmtk_t), "/s", "dcmqrscp")

        # 3. RAD-69 of the whole study
        if "rad69" in only:
            from pydicom import dcmread
            docs = [(d.SeriesInstanceUID, d.SOPInstanceUID)
                    for d in (dcmread(f, stop_before_pixels=True) for f in study.files)]
            request = rad69_request(study.uid, docs, "1.3.6.1.4.1.21367.13.40.302")
            spool = work / "spool"
            spool.mkdir()
            best = 0.0
            for _ in range(args.repeat):
                t = time.perf_counter()
                reply = SoapClient(f"http://127.0.0.1:{http}/imaging-source", 300, spool, 1 << 30).call(
                    ns.RETRIEVE_IMAGING, request)
                elapsed = time.perf_counter() - t
                size = sum(a.size for a in reply.attachments.values())
                assert len(reply.attachments) == len(docs), etree.tostring(reply.body)[:500]
                reply.discard()
                best = max(best, size / 1e6 / elapsed)
            # The same request from curl, a client nobody here wrote, reading the MTOM reply into
            # nothing: the source's own rate, without our client's multipart parsing.
            from affinity_domain import soap
            envelope = work / "rad69.xml"
            envelope.write_bytes(soap.to_bytes(soap.envelope(request, ns.RETRIEVE_IMAGING,
                                                             to=f"http://127.0.0.1:{http}/imaging-source")))
            best_curl = 0.0
            for _ in range(args.repeat):
                out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
                                      "-H", 'Content-Type: application/soap+xml; charset=UTF-8; '
                                            f'action="{ns.RETRIEVE_IMAGING}"',
                                      "--data-binary", f"@{envelope}", f"http://127.0.0.1:{http}/imaging-source"],
                                     capture_output=True, text=True, check=True)
                size, seconds = out.stdout.split()
                best_curl = max(best_curl, int(size) / 1e6 / float(seconds))
            print(f"{f'RAD-69 of {len(docs)} instances (MB/s, best of {args.repeat})':<52} ours {best:>9.1f} MB/s   "
                  f"curl {best_curl:.1f} MB/s   target 100 MB/s", flush=True)

        # 4. the manifest of a large study, built and published (ITI-9, KOS, RAD-68 → ITI-42)
        if "manifest" in only:
            big = dd.make_study(work / "big", local, series=10, per_series=1)
            timed("/usr/bin/storescu", "-aec", "XDSI_SOURCE", "127.0.0.1", dicom, *big.files)
            from imaging_source.publish import Publisher
            from imaging_source.settings import ImagingSourceSettings
            from imaging_source.store import Index
            from affinity_domain.content import FileStore
            pool = db.open_pool(database, "imaging_source")
            with pool.connection() as conn:
                # Multiply the study's instances in the index (sending 5,000 files is the intake figure's job).
                conn.execute("""INSERT INTO instance (sop_uid, series, sop_class, instance_number, is_image,
                                transfer_syntax, sha1, size)
                                SELECT i.sop_uid || '.' || g, i.series, i.sop_class, g::text, true,
                                i.transfer_syntax, i.sha1, i.size FROM instance i JOIN series se ON se.id = i.series
                                JOIN study st ON st.id = se.study, generate_series(1, %s) g WHERE st.study_uid = %s""",
                             (args.manifest_instances // len(big.files) - 1, big.uid))
                conn.execute("UPDATE study SET version = version + 1 WHERE study_uid = %s", (big.uid,))
                count = conn.execute("SELECT count(*) FROM instance i JOIN series se ON se.id = i.series JOIN study st "
                                     "ON st.id = se.study WHERE st.study_uid = %s", (big.uid,)).fetchone()[0]
            cfg = config_mod.load(environ=env)
            s = config_mod.build_settings(ImagingSourceSettings, cfg)
            publisher = Publisher(Index(pool), FileStore(work / "images"), s)
            t = time.perf_counter()
            result = publisher.publish_now(big.uid)
            elapsed = time.perf_counter() - t
            assert result.startswith("published"), result
            print(f"{f'manifest of {count} instances built and published (s)':<52} ours {elapsed:>9.2f} s      "
                  f"target < 2 s", flush=True)
            pool.close()
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if pix is not None:
            pix.stop()
        if fast_database is not None:
            drop_database(database, fast_database)
        database_in_use.close()
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    sys.exit(main())
