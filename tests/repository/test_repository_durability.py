"""Nothing accepted is lost, nothing refused is kept: a registry that is down or slow, a full
disk, and ``kill -9`` of the repository while a submission is on its way to the registry."""
from __future__ import annotations

import os
import resource
import signal
import socket
import threading
import time

import psycopg
import pytest

from affinity_domain import ns
from tests.services import free_port, read_http_message, start_repository
from tests.repository.pnr import REPOSITORY_UNIQUE_ID, provide, retrieve, sha1, with_hash
from tests.xds import Doc, envelope, feed, new_patient, post as registry_post, stored_query

GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"


@pytest.fixture
def own_db(new_database):
    """Each repository here has its own index (and store); they share the session's registry."""
    return new_database()


@pytest.fixture(scope="module")
def patient(registry_service):
    pid = new_patient()
    feed(registry_service, pid)
    return pid


def in_registry(registry, unique_id: str) -> bool:
    r = registry_post(registry.url, envelope(ns.STORED_QUERY, stored_query(
        GET_DOCUMENTS, {"$XDSDocumentEntryUniqueId": f"('{unique_id}')"})))
    return len(r.objects("ExtrinsicObject")) == 1


def index_rows(repo) -> dict[str, tuple[str, str]]:
    with psycopg.connect(repo.database_url) as conn:
        return {u: (h, s) for u, h, s in conn.execute("SELECT unique_id, sha1, state FROM repository.document")}


def stored_files(repo) -> set[str]:
    return {p.name for p in repo.store.glob("[0-9a-f][0-9a-f]/**/*") if p.is_file() and len(p.name) == 40}


def spool_files(repo) -> list:
    return [f for d in (repo.store / "spool").iterdir() for f in d.iterdir()]


def assert_consistent(repo):
    """No orphan bytes, no pending rows, no spool leftovers: every stored file is named by a
    registered row and every registered row has its file."""
    rows = index_rows(repo)
    assert all(state == "registered" for _, state in rows.values()), rows
    assert stored_files(repo) == {h for h, _ in rows.values()}
    assert spool_files(repo) == []


class HoldingProxy:
    """Stands between repository and registry: takes the ITI-42 request whole, tells the test,
    then forwards it (or not) when told — the repository is killed in between."""

    def __init__(self, registry_url: str):
        self.target = ("127.0.0.1", int(registry_url.split(":")[2].split("/")[0]))
        self.port = free_port()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.arrived, self.decided = threading.Event(), threading.Event()
        self.forward = False
        threading.Thread(target=self._run, daemon=True).start()

    def _relay(self):
        """Requests after the held one (recovery's queries) pass straight through, one per connection."""
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, socket.create_connection(self.target) as up:
                head, body = read_http_message(conn)
                up.sendall(head + b"\r\n\r\n" + body)
                answer_head, answer = read_http_message(up)
                conn.sendall(answer_head + b"\r\n\r\n" + answer)

    def _run(self):
        conn, _ = self.server.accept()
        head, body = read_http_message(conn)
        self.arrived.set()
        threading.Thread(target=self._relay, daemon=True).start()
        self.decided.wait(60)
        if self.forward:
            with socket.create_connection(self.target) as up:
                up.sendall(head + b"\r\n\r\n" + body)
                up.settimeout(30)
                try:
                    while up.recv(65536):   # drain the registry's answer; nobody is waiting for it
                        pass
                except TimeoutError:        # keep-alive: the registry holds the connection open
                    pass
        conn.close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/registry"


@pytest.mark.parametrize("registry_got_it", [False, True], ids=["before-registration", "after-registration"])
def test_kill_9_during_registration_leaves_no_orphan_and_no_dangling_entry(
        domain, own_db, patient, tmp_path, registry_got_it):
    registry, _ = domain
    proxy = HoldingProxy(registry.url)
    repo = start_repository(own_db, proxy.url, tmp_path, workers=1, registry_timeout=60)
    data = os.urandom(2_000_000)
    doc = with_hash(Doc(), data)
    answer = {}
    client = threading.Thread(target=lambda: answer.setdefault("a", _try_provide(repo.url, patient, doc, data)))
    client.start()
    try:
        assert proxy.arrived.wait(30), "the ITI-42 request never reached the registry"
        assert index_rows(repo)[doc.unique_id][1] == "pending"
        assert sha1(data) in stored_files(repo)           # bytes stored before registration
    finally:
        repo.stop(signal.SIGKILL)
    proxy.forward = registry_got_it
    proxy.decided.set()
    client.join(30)
    assert answer["a"] is None, "the client got an answer from a killed repository"
    time.sleep(1)
    assert in_registry(registry, doc.unique_id) == registry_got_it
    # Restart on the same store and database: recovery asks the registry and settles the rest.
    repo = start_repository(own_db, registry.url, tmp_path, port=repo.port, workers=1)
    try:
        deadline = time.monotonic() + 30
        while any(s == "pending" for _, s in index_rows(repo).values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert_consistent(repo)
        r = retrieve(repo.url, [(REPOSITORY_UNIQUE_ID, doc.unique_id)])
        if registry_got_it:
            assert r.documents()[doc.unique_id][1] == data       # registered, so it is kept
        else:
            assert r.error_codes == ["XDSDocumentUniqueIdError"]
            assert doc.unique_id not in index_rows(repo)
        assert in_registry(registry, doc.unique_id) == registry_got_it
    finally:
        repo.stop()


def _try_provide(url, patient, doc, data):
    try:
        return provide(url, patient, [(doc, data)])
    except (OSError, ConnectionError, Exception):
        return None


def test_kill_9_mid_upload_leaves_nothing(domain, own_db, patient, tmp_path):
    registry, _ = domain
    repo = start_repository(own_db, registry.url, tmp_path, workers=1)
    from tests.repository.pnr import mtom_message, provide_body
    data = os.urandom(8_000_000)
    doc = with_hash(Doc(), data)
    message, ctype = mtom_message(ns.PROVIDE_AND_REGISTER, *provide_body(patient, [(doc, data)]))
    with socket.create_connection(("127.0.0.1", repo.port)) as s:
        s.sendall(f"POST /repository HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                  f"Content-Length: {len(message)}\r\n\r\n".encode() + message[:len(message) // 2])
        time.sleep(0.5)
        repo.stop(signal.SIGKILL)
    repo = start_repository(own_db, registry.url, tmp_path, port=repo.port, workers=1)
    try:
        time.sleep(1)
        assert doc.unique_id not in index_rows(repo)
        assert_consistent(repo)
        assert not in_registry(registry, doc.unique_id)
    finally:
        repo.stop()


def test_registry_down_is_registry_not_available_and_nothing_is_kept(domain, own_db, patient, tmp_path):
    registry, _ = domain
    repo = start_repository(own_db, f"http://127.0.0.1:{free_port()}/registry", tmp_path)
    try:
        data = b"nobody registers me"
        doc = with_hash(Doc(), data)
        a = provide(repo.url, patient, [(doc, data)])
        assert a.status_name == "Failure" and a.error_codes == ["XDSRegistryNotAvailable"]
        assert doc.unique_id not in index_rows(repo)
        assert sha1(data) not in stored_files(repo) and spool_files(repo) == []
        assert retrieve(repo.url, [(REPOSITORY_UNIQUE_ID, doc.unique_id)]).error_codes == ["XDSDocumentUniqueIdError"]
    finally:
        repo.stop()


def test_slow_registry_times_out_and_nothing_is_visible(domain, own_db, patient, tmp_path):
    registry, _ = domain
    silent = socket.create_server(("127.0.0.1", 0))       # accepts, never answers
    silent.listen(16)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/registry"
    repo = start_repository(own_db, url, tmp_path, registry_timeout=1.5)
    try:
        data = b"slow registry"
        doc = with_hash(Doc(), data)
        started = time.monotonic()
        a = provide(repo.url, patient, [(doc, data)])
        assert time.monotonic() - started < 10
        assert a.error_codes == ["XDSRegistryNotAvailable"]
        r = retrieve(repo.url, [(REPOSITORY_UNIQUE_ID, doc.unique_id)])
        assert r.error_codes == ["XDSDocumentUniqueIdError"]
        # Still pending: the registry may yet have registered it; recovery settles it later.
        assert index_rows(repo)[doc.unique_id][1] == "pending"
    finally:
        repo.stop()
        silent.close()


def test_a_full_disk_is_out_of_resources_and_the_service_keeps_serving(domain, own_db, patient, tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: writing past it fails like ENOSPC does."""
    registry, _ = domain
    limit = 400_000           # waitress keeps bodies under 512 KB in memory; our spool file is not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    repo = start_repository(own_db, registry.url, tmp_path, preexec_fn=small_files)
    try:
        big = os.urandom(450_000)
        doc = with_hash(Doc(), big)
        a = provide(repo.url, patient, [(doc, big)])
        assert a.status == 200 and a.error_codes == ["XDSRepositoryOutOfResources"]
        assert doc.unique_id not in index_rows(repo) and spool_files(repo) == []
        assert not in_registry(registry, doc.unique_id)
        small = b"fits"
        doc = with_hash(Doc(), small)
        assert provide(repo.url, patient, [(doc, small)]).status_name == "Success"
        assert retrieve(repo.url, [(REPOSITORY_UNIQUE_ID, doc.unique_id)]).documents()[doc.unique_id][1] == small
    finally:
        repo.stop()


@pytest.mark.parametrize("registry_got_it", [False, True], ids=["never-registered", "registered-late"])
def test_a_timed_out_registration_is_settled_by_the_same_process(domain, own_db, patient, tmp_path, registry_got_it):
    """The repository's own submission timed out at the registry: once the grace period is past,
    its own recovery settles it (kept if the registry has it, forgotten if not), without a restart."""
    registry, _ = domain
    proxy = HoldingProxy(registry.url)
    repo = start_repository(own_db, proxy.url, tmp_path, workers=1, registry_timeout=1.5,
                            pending_grace_seconds=3, recovery_seconds=1)
    try:
        data = os.urandom(5_000)
        doc = with_hash(Doc(), data)
        assert provide(repo.url, patient, [(doc, data)]).error_codes == ["XDSRegistryNotAvailable"]
        assert proxy.arrived.wait(10)
        proxy.forward = registry_got_it
        proxy.decided.set()
        deadline = time.monotonic() + 30
        while index_rows(repo).get(doc.unique_id, ("", ""))[1] == "pending":
            assert time.monotonic() < deadline, "the pending submission was never settled"
            time.sleep(0.3)
        r = retrieve(repo.url, [(REPOSITORY_UNIQUE_ID, doc.unique_id)])
        if registry_got_it:
            assert in_registry(registry, doc.unique_id)
            assert sha1(r.documents()[doc.unique_id][1]) == doc.hash
        else:
            assert r.error_codes == ["XDSDocumentUniqueIdError"]
        assert_consistent(repo)
    finally:
        repo.stop()
