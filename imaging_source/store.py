"""The only module that speaks SQL: the patient/study/series/instance index and the
publication state (schema ``imaging_source``, migrations/)."""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from .identity import LocalIdentity, PatientConflict
from .intake import Received
from .query import Condition

# C-FIND columns: the only identifiers that reach SQL text (query.py names them).
_FROM = {
    "STUDY": "study st JOIN patient p ON p.id = st.patient",
    "SERIES": "series se JOIN study st ON st.id = se.study JOIN patient p ON p.id = st.patient",
    "IMAGE": ("instance i JOIN series se ON se.id = i.series JOIN study st ON st.id = se.study "
              "JOIN patient p ON p.id = st.patient"),
}
_COUNTS = {
    "STUDY": ("(SELECT count(*) FROM series x WHERE x.study = st.id) AS n_series, "
              "(SELECT count(*) FROM instance y JOIN series x ON x.id = y.series "
              "WHERE x.study = st.id) AS n_instances, "
              "(SELECT string_agg(DISTINCT x.modality, '\\') FROM series x WHERE x.study = st.id) AS modalities"),
    "SERIES": "(SELECT count(*) FROM instance y WHERE y.series = se.id) AS n_instances",
    "IMAGE": "NULL AS n_instances",
}
_ORDER = {"STUDY": "st.id", "SERIES": "se.id", "IMAGE": "i.id"}
_MODALITIES = "(SELECT string_agg(x.modality, '\\') FROM series x WHERE x.study = st.id)"
_COLUMNS = {"p.patient_id", "p.issuer", "p.name", "p.birth_date", "p.sex", "st.study_uid", "st.study_date",
            "st.study_time", "st.accession", "st.study_id", "st.description", "st.referring",
            "se.series_uid", "se.modality", "se.series_number", "se.description", "se.body_part",
            "i.sop_uid", "i.sop_class", "i.instance_number", "modalities"}


@dataclass
class Outcome:
    status: str                 # stored | replaced | unchanged | ignored | rejected | unauthorized | failed
    drop_sha1: str = ""         # bytes no longer referenced (the replaced file, or the new copy)
    previous_sha1: str = ""     # the bytes indexed before, for an instance sent again
    reason: str = ""            # why the index refused it (failed)


def refused_entry(e: Exception) -> bool:
    """Whether an error belongs to the entry being indexed (its values, the rules it breaks) rather
    than to the database or to our reach of it: the entry is refused, the others go on."""
    if isinstance(e, PatientConflict):
        return True
    if isinstance(e, psycopg.Error):
        return isinstance(e, (psycopg.DataError, psycopg.IntegrityError)) or (e.sqlstate or "").startswith("P0")
    return isinstance(e, (ValueError, TypeError, KeyError))


@dataclass
class StudySnapshot:
    id: int
    version: int
    study: dict
    patient: dict
    series: list[dict]
    instances: list[dict]
    outside: bool
    pending: dict | None
    latest: dict | None          # the newest approved manifest
    attempts: int = 0


@dataclass
class Claim:
    study_id: int
    study_uid: str


class Index:
    def __init__(self, pool: ConnectionPool, intake_pool: ConnectionPool | None = None):
        """``intake_pool``: the connections C-STORE indexing uses (unchecked, and with commits as
        durable as the image files are); the ``pool`` otherwise."""
        self.pool, self.intake_pool = pool, intake_pool or pool
        # Called before C-FIND, C-MOVE/C-GET and RAD-69 read: the indexer's flush, so that an
        # instance already answered is never missing from a query (read your writes).
        self.before_read = lambda: True

    def close(self) -> None:
        for pool in {id(p): p for p in (self.pool, self.intake_pool)}.values():
            pool.close()

    # ------------------------------------------------------------ intake

    def _ids(self, cur, r: Received) -> tuple[int, int]:
        """(series, study) for an instance not in a known series of its study; the patient, study and
        series made as needed. An existing patient keeps its demographics (they are not updated in
        passing); a study or series of another patient is refused (``PatientConflict``)."""
        cur.execute("INSERT INTO patient (patient_id, issuer, name, birth_date, sex) VALUES (%s,%s,%s,%s,%s) "
                    "ON CONFLICT (patient_id, issuer) DO UPDATE SET patient_id = EXCLUDED.patient_id RETURNING id",
                    (r.identity.patient_id, r.identity.issuer, r.patient.get("name", ""),
                     r.patient.get("birth_date", ""), r.patient.get("sex", "")))
        patient = cur.fetchone()[0]
        s = r.study
        cur.execute("INSERT INTO study (study_uid, patient, study_date, study_time, accession, study_id, "
                    "description, referring) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (study_uid) DO UPDATE SET study_uid = EXCLUDED.study_uid RETURNING id, patient",
                    (r.study_uid, patient, s.get("date", ""), s.get("time", ""), s.get("accession", ""),
                     s.get("id", ""), s.get("description", ""), s.get("referring", "")))
        study, owner = cur.fetchone()
        if owner != patient:
            self._take_over(cur, r, study, owner, patient)
        se = r.series
        cur.execute("INSERT INTO series (series_uid, study, modality, series_number, description, body_part) "
                    "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (series_uid) DO UPDATE "
                    "SET series_uid = EXCLUDED.series_uid RETURNING id, study",
                    (r.series_uid, study, se.get("modality", ""), se.get("number", ""),
                     se.get("description", ""), se.get("body_part", "")))
        series, series_study = cur.fetchone()
        if series_study != study:          # a series uid of another study: filed there, if it is this patient's
            cur.execute("SELECT patient FROM study WHERE id = %s", (series_study,))
            if cur.fetchone()[0] != patient:
                raise PatientConflict(r.identity, self._identity(cur, series_study), r.study_uid)
        return series, series_study

    _FREE = ("NOT EXISTS (SELECT 1 FROM series se JOIN instance i ON i.series = se.id WHERE se.study = st.id) "
             "AND NOT EXISTS (SELECT 1 FROM manifest m WHERE m.study = st.id AND m.status = 'approved')")

    def _take_over(self, cur, r: Received, study: int, owner: int, patient: int) -> None:
        """A study of another patient is this one's only when it has nothing left of the other
        (every instance removed, no manifest registered for it): what a study sent under the wrong
        patient, removed and sent again, needs."""
        cur.execute(f"SELECT {self._FREE} FROM study st WHERE st.id = %s FOR UPDATE", (study,))
        if not cur.fetchone()[0]:
            raise PatientConflict(r.identity, self._identity(cur, study), r.study_uid)
        cur.execute("UPDATE study SET patient = %s WHERE id = %s", (patient, study))

    @staticmethod
    def _identity(cur, study: int) -> LocalIdentity:
        cur.execute("SELECT p.patient_id, p.issuer FROM study st JOIN patient p ON p.id = st.patient "
                    "WHERE st.id = %s", (study,))
        return LocalIdentity(*cur.fetchone())

    def study_patient(self, study_uid: str, timeout: float = 1.0) -> LocalIdentity | None:
        """The patient a study belongs to; None for a study not indexed, or one with nothing of its
        patient left (see ``_take_over``). Raises when the index does not answer within ``timeout``."""
        with self.intake_pool.connection(timeout=timeout) as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(timeout * 1000)}ms",))
            cur.execute(f"SELECT p.patient_id, p.issuer, {self._FREE} FROM study st "
                        "JOIN patient p ON p.id = st.patient WHERE st.study_uid = %s", (study_uid,))
            row = cur.fetchone()
        return None if row is None or row[2] else LocalIdentity(row[0], row[1])

    _FAST = ("WITH se AS (SELECT se.id, se.study FROM series se JOIN study st ON st.id = se.study "
             "  JOIN patient p ON p.id = st.patient WHERE se.series_uid = %(series)s AND st.study_uid = %(study)s "
             "  AND p.patient_id = %(pid)s AND p.issuer = %(issuer)s), "
             "ins AS (INSERT INTO instance (sop_uid, series, sop_class, instance_number, is_image, transfer_syntax, "
             "  sha1, size, calling_ae) SELECT %(sop)s, se.id, %(cls)s, %(num)s, %(img)s, %(ts)s, %(sha1)s, %(size)s, "
             "  %(ae)s FROM se ON CONFLICT (sop_uid) DO NOTHING RETURNING id), "
             "up AS (UPDATE study SET version = version + 1, changed_at = now(), outside = outside OR %(outside)s, "
             "  next_attempt_at = NULL, attempts = 0 WHERE id = (SELECT study FROM se) AND EXISTS (SELECT 1 FROM ins) "
             "  RETURNING id) "
             "SELECT (SELECT id FROM ins), (SELECT id FROM up)")

    def record(self, r: Received, sha1: str, size: int, calling_ae: str, policy: str) -> Outcome:
        """Index one received instance (its bytes are already in the store) in one transaction;
        once more on a fresh connection if the server dropped the one lent (it restarted). A
        refusal is raised (``PatientConflict``, or the database's)."""
        try:
            return self._record_all([(r, sha1, size, calling_ae)], policy)[0]
        except psycopg.OperationalError:
            return self._record_all([(r, sha1, size, calling_ae)], policy)[0]

    def record_batch(self, entries: list[tuple[Received, str, int, str]], policy: str) -> list[Outcome]:
        """Index received instances in one transaction (in order: a later one may replace an earlier
        one). Should one be refused (``refused_entry``), each is tried in its own transaction and the
        refused ones come back as ``failed``, with the reason; any other error is raised."""
        for attempt in (1, 2):
            try:
                return self._record_all(entries, policy)
            except psycopg.OperationalError:
                if attempt == 2:
                    raise                   # a dropped connection is tried once more, on a new one
            except Exception as e:
                if not refused_entry(e):
                    raise
                break
        outcomes = []
        for entry in entries:
            try:
                outcomes.append(self._record_all([entry], policy)[0])
            except Exception as e:
                if not refused_entry(e):
                    raise
                outcomes.append(Outcome("failed", reason=f"{type(e).__name__}: {e}"[:500]))
        return outcomes

    def _record_all(self, entries, policy: str) -> list[Outcome]:
        """The common case, a new instance of a known series, is one statement per instance, sent
        for the whole batch at once (pipelined); the others are then recorded in order."""
        with self.intake_pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(self._FAST, [{
                "series": r.series_uid, "study": r.study_uid, "sop": r.sop_uid, "cls": r.sop_class,
                "num": r.instance_number, "img": r.is_image, "ts": r.transfer_syntax, "sha1": sha1,
                "size": size, "ae": ae, "outside": r.outside, "pid": r.identity.patient_id,
                "issuer": r.identity.issuer} for r, sha1, size, ae in entries], returning=True)
            fast = []
            while True:
                inserted, touched = cur.fetchone()
                fast.append(inserted is not None and touched is not None)
                if not cur.nextset():
                    break
            # Only an instance not yet indexed can pass the fast statement, so the first of several
            # copies of one SOP Instance UID in a batch is still recorded before the others.
            return [Outcome("stored") if done else self._record_in(cur, r, sha1, size, ae, policy)
                    for (r, sha1, size, ae), done in zip(entries, fast)]

    def _record_in(self, cur, r: Received, sha1: str, size: int, calling_ae: str, policy: str) -> Outcome:
        """An instance the fast statement did not index: of a new series, or already indexed."""
        series, study = self._ids(cur, r)
        cur.execute("INSERT INTO instance (sop_uid, series, sop_class, instance_number, is_image, "
                    "transfer_syntax, sha1, size, calling_ae) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (sop_uid) DO NOTHING RETURNING id",
                    (r.sop_uid, series, r.sop_class, r.instance_number, r.is_image, r.transfer_syntax,
                     sha1, size, calling_ae))
        outcome = Outcome("stored")
        if cur.fetchone() is None:
            cur.execute("SELECT i.id, i.sha1, i.series FROM instance i WHERE sop_uid = %s FOR UPDATE",
                        (r.sop_uid,))
            old_id, old_sha1, old_series = cur.fetchone()
            if old_sha1 == sha1 and old_series == series:
                return Outcome("unchanged")
            if policy != "replace":
                return Outcome("ignored" if policy == "ignore" else "rejected", sha1 if sha1 != old_sha1 else "",
                               old_sha1)
            if not r.may_replace:       # its sender lacks the role (access.py): the stored one stays
                return Outcome("unauthorized", sha1 if sha1 != old_sha1 else "", old_sha1)
            cur.execute("SELECT st.id FROM series se JOIN study st ON st.id = se.study WHERE se.id = %s",
                        (old_series,))
            old_study = cur.fetchone()[0]
            cur.execute("UPDATE instance SET series=%s, sop_class=%s, instance_number=%s, is_image=%s, "
                        "transfer_syntax=%s, sha1=%s, size=%s, calling_ae=%s, received_at=now() WHERE id=%s",
                        (series, r.sop_class, r.instance_number, r.is_image, r.transfer_syntax, sha1, size,
                         calling_ae, old_id))
            if old_study != study:
                self._touch(cur, old_study, False)
            cur.execute("SELECT count(*) FROM instance WHERE sha1 = %s", (old_sha1,))
            outcome = Outcome("replaced", old_sha1 if cur.fetchone()[0] == 0 else "", old_sha1)
        self._touch(cur, study, r.outside)
        return outcome

    @staticmethod
    def _touch(cur, study: int, outside: bool) -> None:
        cur.execute("UPDATE study SET version = version + 1, changed_at = now(), outside = outside OR %s, "
                    "next_attempt_at = NULL, attempts = 0 WHERE id = %s", (outside, study))

    def remove(self, level: str, uids: list[str]) -> list[str]:
        """Delete studies, series or instances from the index (a PACS deletion, an IOCM rejection);
        returns the sha1s no longer referenced. A study stays (empty) so that its manifest is
        deprecated."""
        where = {"STUDY": "st.study_uid", "SERIES": "se.series_uid", "IMAGE": "i.sop_uid"}[level]
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT i.id, i.sha1, st.id FROM {_FROM['IMAGE']} WHERE {where} = ANY(%s)", (list(uids),))
            rows = cur.fetchall()
            if not rows:
                return []
            cur.execute("DELETE FROM instance WHERE id = ANY(%s)", ([r[0] for r in rows],))
            cur.execute("DELETE FROM series se WHERE NOT EXISTS (SELECT 1 FROM instance i WHERE i.series = se.id)")
            for study in {r[2] for r in rows}:
                self._touch(cur, study, False)
            sha1s = list({r[1] for r in rows})
            cur.execute("SELECT DISTINCT sha1 FROM instance WHERE sha1 = ANY(%s)", (sha1s,))
            still = {r[0] for r in cur.fetchall()}
            return [s for s in sha1s if s not in still]

    # ------------------------------------------------------------ serving

    def find(self, level: str, conditions: list[Condition], limit: int = 10000, offset: int = 0) -> list[dict]:
        """Matching rows in the order they were indexed (so that ``offset`` pages are stable)."""
        self.before_read()
        where, params = [], []
        for c in conditions:
            if c.column not in _COLUMNS:
                raise ValueError(f"unknown column {c.column}")
            column = _MODALITIES if c.column == "modalities" else c.column
            if c.op == "in":
                where.append(f"{column} = ANY(%s)")
                params.append(list(c.values))
            elif c.op == "like":
                where.append(f"{column} LIKE %s ESCAPE '!'")
                params.append(c.values[0])
            elif c.op == "range":
                low, high = c.values
                if low:
                    where.append(f"{column} >= %s")
                    params.append(low)
                if high:
                    where.append(f"{column} <= %s")
                    params.append(high)
            elif c.op == "fuzzy":        # each word begins a component of the name, in any case
                for word in c.values:
                    where.append(f"{column} ~* %s")
                    params.append("(^|[\\^ =])" + re.escape(word))
            elif c.op == "contains":     # a multi-valued column holding one of the values
                where.append(f"string_to_array({column}, '\\') && %s::text[]")
                params.append(list(c.values))
            else:
                raise ValueError(f"unknown match {c.op}")
        sql = ("SELECT p.patient_id, p.issuer, p.name, p.birth_date, p.sex, st.study_uid, st.study_date, "
               "st.study_time, st.accession, st.study_id, st.description AS study_description, st.referring, "
               + ("se.series_uid, se.modality, se.series_number, se.description AS series_description, "
                  "se.body_part, " if level in ("SERIES", "IMAGE") else "")
               + ("i.sop_uid, i.sop_class, i.instance_number, i.transfer_syntax, i.sha1, " if level == "IMAGE" else "")
               + f"{_COUNTS[level]} FROM {_FROM[level]}"
               + (" WHERE " + " AND ".join(where) if where else "")
               + f" ORDER BY {_ORDER[level]} LIMIT {int(limit)} OFFSET {int(offset)}")
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def instances(self, study_uids: list[str] = (), series_uids: list[str] = (),
                  sop_uids: list[str] = ()) -> list[dict]:
        """Instances to retrieve: those of the studies, series and instances named (all must match
        the levels given)."""
        self.before_read()
        where, params = [], []
        for column, values in (("st.study_uid", study_uids), ("se.series_uid", series_uids),
                               ("i.sop_uid", sop_uids)):
            if values:
                where.append(f"{column} = ANY(%s)")
                params.append(list(values))
        if not where:
            return []
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f"SELECT st.study_uid, se.series_uid, i.sop_uid, i.sop_class, i.transfer_syntax, i.sha1, "
                        f"p.patient_id, p.issuer, "
                        f"i.size FROM {_FROM['IMAGE']} WHERE {' AND '.join(where)} "
                        f"ORDER BY se.id, i.id", params)
            return cur.fetchall()

    def wait_durable(self, timeout: float, poll: float = 0.05) -> bool:
        """Wait until PostgreSQL has flushed its WAL past every commit made so far, the intake's
        asynchronous ones (``durability = "fast"``) included; False on timeout."""
        deadline = time.monotonic() + timeout
        with self.pool.connection() as conn:
            target = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
            while not conn.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
                if time.monotonic() > deadline:
                    return False
                time.sleep(poll)
        return True

    # ------------------------------------------------------------ publication

    def claim_due(self, quiet_seconds: float, lease_seconds: float) -> Claim | None:
        """Take one study that has been quiet long enough and is not being published elsewhere."""
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE study SET lease_until = now() + make_interval(secs => %s) WHERE id = ("
                " SELECT id FROM study WHERE version > published_version"
                "  AND changed_at <= now() - make_interval(secs => %s)"
                "  AND (next_attempt_at IS NULL OR next_attempt_at <= now())"
                "  AND (lease_until IS NULL OR lease_until < now())"
                " ORDER BY changed_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, study_uid",
                (lease_seconds, quiet_seconds))
            row = cur.fetchone()
            return Claim(*row) if row else None

    def claim_study(self, study_uid: str, lease_seconds: float) -> Claim | None:
        """Take a named study now, quiet or not (``xdsi source publish``)."""
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.execute("UPDATE study SET lease_until = now() + make_interval(secs => %s) "
                        "WHERE study_uid = %s AND (lease_until IS NULL OR lease_until < now()) "
                        "RETURNING id, study_uid", (lease_seconds, study_uid))
            row = cur.fetchone()
            return Claim(*row) if row else None

    def snapshot(self, study_id: int) -> StudySnapshot:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            # One snapshot of the study: instances arriving meanwhile bump version and wait.
            conn.isolation_level = None
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT * FROM study WHERE id = %s", (study_id,))
            study = cur.fetchone()
            cur.execute("SELECT * FROM patient WHERE id = %s", (study["patient"],))
            patient = cur.fetchone()
            cur.execute("SELECT * FROM series WHERE study = %s ORDER BY id", (study_id,))
            series = cur.fetchall()
            cur.execute("SELECT i.*, se.series_uid FROM instance i JOIN series se ON se.id = i.series "
                        "WHERE se.study = %s ORDER BY se.id, i.id", (study_id,))
            instances = cur.fetchall()
            cur.execute("SELECT * FROM manifest WHERE study = %s AND status = 'approved' "
                        "ORDER BY published_at DESC LIMIT 1", (study_id,))
            latest = cur.fetchone()
        return StudySnapshot(study_id, study["version"], study, patient, series, instances, study["outside"],
                             study["pending"], latest, study["attempts"])

    def save_pending(self, study_id: int, pending: dict) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE study SET pending = %s WHERE id = %s", (json.dumps(pending), study_id))

    def settle(self, study_id: int, version: int, manifest: dict | None = None,
               replaced: str = "", status_of_replaced: str = "replaced") -> None:
        """The study is published as of ``version`` (with ``manifest`` registered, if any)."""
        with self.pool.connection() as conn, conn.cursor() as cur:
            if replaced:
                cur.execute("UPDATE manifest SET status = %s WHERE sop_uid = %s", (status_of_replaced, replaced))
            if manifest:
                cur.execute("INSERT INTO manifest (sop_uid, study, entry_uuid, study_version, instances, refs_digest, "
                            "patient_id, sha1) VALUES (%(sop_uid)s, %(study)s, %(entry_uuid)s, %(study_version)s, "
                            "%(instances)s, %(refs_digest)s, %(patient_id)s, %(sha1)s) "
                            "ON CONFLICT (sop_uid) DO NOTHING", {**manifest, "study": study_id})
            cur.execute("UPDATE study SET published_version = GREATEST(published_version, %s), lease_until = NULL, "
                        "pending = NULL, attempts = 0, last_error = '', next_attempt_at = NULL, quarantined = false "
                        "WHERE id = %s", (version, study_id))

    def postpone(self, study_id: int, error: str, retry_seconds: float, keep_pending: bool = True,
                 quarantined: bool = False) -> None:
        """Try the study's publication again later. ``quarantined``: it failed by an error of ours,
        not by a peer or a missing identity (counted apart, tried again all the same)."""
        with self.pool.connection() as conn:
            conn.execute("UPDATE study SET lease_until = NULL, attempts = attempts + 1, last_error = %s, "
                         "next_attempt_at = now() + make_interval(secs => %s), quarantined = %s"
                         + ("" if keep_pending else ", pending = NULL") + " WHERE id = %s",
                         (error[:2000], retry_seconds, quarantined, study_id))

    def publications_due(self) -> int:
        """Studies changed since they were last published (the publisher's queue)."""
        with self.pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM study WHERE version > published_version").fetchone()[0]

    def publications_quarantined(self) -> int:
        with self.pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM study WHERE quarantined").fetchone()[0]

    def publication_state(self, study_uid: str) -> dict[str, Any] | None:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute("SELECT id, version, published_version, attempts, last_error, quarantined, outside, "
                        "next_attempt_at FROM study WHERE study_uid = %s", (study_uid,))
            row = cur.fetchone()
            if row:
                cur.execute("SELECT sop_uid, status, study_version, instances, entry_uuid FROM manifest "
                            "WHERE study = %s ORDER BY published_at", (row["id"],))
                row["manifests"] = cur.fetchall()
            return row
