"""The only module of the registry that speaks SQL."""
from __future__ import annotations

import json
from xml.sax.saxutils import escape
from contextlib import contextmanager
from typing import Iterator

import psycopg
from lxml import etree
from psycopg.rows import namedtuple_row
from psycopg_pool import ConnectionPool

from affinity_domain import ns
from affinity_domain import ebrim as rim
from affinity_domain.ebrim import ObjectList, RegistryObject, code_key
from affinity_domain.errors import DUPLICATE_UNIQUE_ID, TOO_MANY_RESULTS, XdsError

from . import metadata_update, submission
from .formats import dtm_key
from .stored_queries import Where

_COLUMNS = {
    "documents": "document_entry",
    "submission_sets": "submission_set",
    "folders": "folder",
    "associations": "association",
}


class Reader:
    """The four table readers stored queries run on (one connection, one snapshot)."""

    def __init__(self, conn: psycopg.Connection, max_results: int):
        self.conn, self.max_results = conn, max_results

    def _select(self, table: str, extra: str, where: Where) -> list:
        sql = f"SELECT id, status, xml{extra} FROM {table} WHERE {where.sql} LIMIT {self.max_results + 1}"
        rows = self.conn.execute(sql, where.args).fetchall()
        if len(rows) > self.max_results:
            raise XdsError(TOO_MANY_RESULTS, f"the query matches more than {self.max_results} objects")
        return rows

    def documents(self, where: Where) -> list:
        return self._select("document_entry", ", patient_id", where)

    def submission_sets(self, where: Where) -> list:
        return self._select("submission_set", ", patient_id", where)

    def folders(self, where: Where) -> list:
        return self._select("folder", ", patient_id, last_update_time", where)

    def associations(self, where: Where) -> list:
        return self._select("association", ", source, target, type, NULL AS patient_id", where)

    def opted_out(self, patient_ids: list[str]) -> set[str]:
        """Those of ``patient_ids`` whose patient opted out."""
        if not patient_ids:
            return set()
        rows = self.conn.execute("SELECT patient_id FROM consent WHERE opted_out AND patient_id = ANY(%s)",
                                 (patient_ids,)).fetchall()
        return {r.patient_id for r in rows}


_PATIENT_SCHEMES = frozenset(rim.PATIENT_ID_SCHEME.values())


def render(row, kind: str) -> etree._Element:
    """The stored object as registered, with its current status, patient and folder time."""
    el = etree.fromstring(row.xml)
    el.set("status", row.status)
    # The stored patient id differs from the row's only after an A40 merge.
    if kind != "associations" and row.patient_id and escape(row.patient_id).encode() not in row.xml:
        for ext in el.iterfind(rim.q(ns.RIM, "ExternalIdentifier")):
            if ext.get("identificationScheme") in _PATIENT_SCHEMES:
                ext.set("value", row.patient_id)
    if kind == "folders":
        for slot in el.iterfind(rim.q(ns.RIM, "Slot")):
            if slot.get("name") == "lastUpdateTime":
                slot[0][0].text = row.last_update_time
    return el


class Store:
    def __init__(self, pool: ConnectionPool, max_results: int = 10000,
                 read_pool: ConnectionPool | None = None):
        """``read_pool``: connections set to REPEATABLE READ, READ ONLY (one snapshot per query,
        begun in the same round trip as its first statement)."""
        self.pool, self.max_results = pool, max_results
        self.read_pool = read_pool or pool

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        with self.read_pool.connection() as conn:
            conn.row_factory = namedtuple_row
            try:
                yield Reader(conn, self.max_results)
            finally:
                conn.rollback()  # end the read-only snapshot; nothing to keep

    # ------------------------------------------------------------ patients (ITI-8)

    def upsert_patient(self, pid: str, demographics: dict) -> None:
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO patient (id, demographics) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE "
                         "SET demographics = EXCLUDED.demographics, updated_at = now()",
                         (pid, json.dumps(demographics)))

    def merge_patients(self, surviving: str, subsumed: str, demographics: dict) -> None:
        """A40: the subsumed id's objects move to the surviving id, in one transaction."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("INSERT INTO patient (id, demographics) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                         (surviving, json.dumps(demographics)))
            conn.execute("INSERT INTO patient (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (subsumed,))
            conn.execute("UPDATE patient SET merged_into = %s, updated_at = now() "
                         "WHERE id = %s OR merged_into = %s", (surviving, subsumed, subsumed))
            for table in ("document_entry", "submission_set", "folder"):
                conn.execute(f"UPDATE {table} SET patient_id = %s WHERE patient_id = %s", (surviving, subsumed))

    def patient(self, pid: str):
        with self.pool.connection() as conn:
            return conn.execute("SELECT id, merged_into FROM patient WHERE id = %s", (pid,)).fetchone()

    # ------------------------------------------------------------ consent (patient opt-out)

    def set_consent(self, pid: str, opted_out: bool, by: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO consent (patient_id, opted_out, by_whom) VALUES (%s, %s, %s) "
                         "ON CONFLICT (patient_id) DO UPDATE SET opted_out = EXCLUDED.opted_out, "
                         "by_whom = EXCLUDED.by_whom, changed_at = now()", (pid, opted_out, by))

    def consent(self, pid: str):
        with self.pool.connection() as conn:
            return conn.execute("SELECT patient_id, opted_out, by_whom, changed_at FROM consent "
                                "WHERE patient_id = %s", (pid,)).fetchone()

    def withheld(self, document_uids: list[str], study_uids: list[str]) -> dict[str, dict[str, str]]:
        """Of these DocumentEntry uniqueIds and study UIDs (a manifest's referenceIdList), those of
        an opted-out patient: {"documents": {uid: patient}, "studies": {uid: patient}}."""
        refs = [f"{uid}^^^^{rim.STUDY_UID_REF}" for uid in study_uids]
        with self.read_pool.connection() as conn:
            docs = conn.execute("SELECT d.unique_id, d.patient_id FROM document_entry d JOIN consent c "
                                "ON c.patient_id = d.patient_id AND c.opted_out WHERE d.unique_id = ANY(%s)",
                                (document_uids,)).fetchall() if document_uids else []
            studies = conn.execute("SELECT r, d.patient_id FROM document_entry d JOIN consent c "
                                   "ON c.patient_id = d.patient_id AND c.opted_out, unnest(d.reference_id) r "
                                   "WHERE d.reference_id && %s AND r = ANY(%s)", (refs, refs)).fetchall() \
                if refs else []
            conn.rollback()
        return {"documents": dict(docs), "studies": {r.split("^", 1)[0]: p for r, p in studies}}

    # ------------------------------------------------------------ registration (ITI-42)

    def register(self, objects: ObjectList, submitted_at: str) -> list[XdsError]:
        """Decide and write a whole submission in one transaction: all of it or none of it.

        Two round trips: BEGIN, the locks and the state's reads; then the writes and COMMIT."""
        try:
            with self.pool.connection() as conn, conn.pipeline():
                doc_uids = sorted({o.unique_id for o in objects.of_kind("document_entry")})
                for uid in doc_uids:  # serialize concurrent registrations of one uniqueId
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (uid,))
                state = self._state(conn, objects)
                errors, effects = submission.decide(objects, state, submitted_at)
                if errors:
                    conn.rollback()
                    return errors
                self._write(conn, objects, effects, submitted_at)
                # A statement, not conn.commit(): a refused write then surfaces at the pipeline's
                # last sync, where psycopg raises it without logging the aborted pipeline.
                conn.execute("COMMIT")
        except psycopg.errors.UniqueViolation as e:
            return [XdsError(DUPLICATE_UNIQUE_ID, f"uniqueId already registered: {e.diag.message_detail}")]
        return []

    def update_status(self, objects: ObjectList, submitted_at: str) -> list[XdsError]:
        """ITI-57 availability status: decide against the locked targets, then record the
        SubmissionSet and Associations and move each target, in one transaction."""
        try:
            with self.pool.connection() as conn, conn.transaction():
                state = self._state(conn, objects)
                errors, changes = metadata_update.decide(objects, state)
                if errors:
                    return errors
                self._write(conn, objects, submission.Effects(), submitted_at)
                for change in changes:
                    conn.execute("UPDATE document_entry SET status = %s WHERE id = %s AND status = %s",
                                 (change.new, change.document, change.original))
        except psycopg.errors.UniqueViolation as e:
            return [XdsError(DUPLICATE_UNIQUE_ID, f"uniqueId already registered: {e.diag.message_detail}")]
        return []

    def bulk_load(self, submissions: list[ObjectList], submitted_at: str) -> None:
        """COPY already validated and planned new submissions (no replacements, no folders):
        the benchmark's loader, sharing the row mapping of ``_write``."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY submission_set (id, unique_id, patient_id, status, source_id, submission_time, "
                          "content_type, author_person, home, xml) FROM STDIN") as copy:
                for objects in submissions:
                    copy.write_row(_submission_set_row(objects.of_kind("submission_set")[0]))
            with cur.copy(f"COPY document_entry ({_DOCUMENT_COLUMNS}) FROM STDIN") as copy:
                for objects in submissions:
                    ss = objects.of_kind("submission_set")[0]
                    for d in objects.of_kind("document_entry"):
                        copy.write_row(_document_row(d, ss.id))
            with cur.copy("COPY association (id, type, source, target, status, submission_set, xml) "
                          "FROM STDIN") as copy:
                for objects in submissions:
                    ss = objects.of_kind("submission_set")[0]
                    for a in objects.of_kind("association"):
                        copy.write_row(_association_row(a, ss.id))

    def _state(self, conn: psycopg.Connection, objects: ObjectList) -> submission.RegistryState:
        state = submission.RegistryState()
        pids = sorted({o.patient_id for o in objects.objects if o.patient_id})
        doc_uids = [o.unique_id for o in objects.of_kind("document_entry")]
        other_uids = [o.unique_id for o in objects.objects if o.kind in ("submission_set", "folder")]
        # Sent together: in a pipeline the first fetch waits for all three answers at once.
        patients = conn.execute("SELECT id, merged_into FROM patient WHERE id = ANY(%s)", (pids,))
        documents = conn.execute("SELECT unique_id, hash, size FROM document_entry WHERE unique_id = ANY(%s)",
                                 (doc_uids,))
        taken = conn.execute("SELECT unique_id FROM submission_set WHERE unique_id = ANY(%(u)s) "
                             "UNION SELECT unique_id FROM folder WHERE unique_id = ANY(%(u)s)", {"u": other_uids})
        state.patients = dict(patients.fetchall())
        for uid, hash_, size in documents.fetchall():
            state.documents_by_unique_id.setdefault(uid, []).append((hash_, size))
        state.taken_unique_ids = {u for (u,) in taken.fetchall()}
        refs = sorted(submission.referenced_ids(objects))
        if refs:
            rows = conn.execute(
                "SELECT id, 'document_entry', status, patient_id, lid FROM document_entry WHERE id = ANY(%(r)s) "
                "UNION ALL SELECT id, 'folder', status, patient_id, lid FROM folder WHERE id = ANY(%(r)s) "
                "UNION ALL SELECT id, 'submission_set', status, patient_id, id FROM submission_set "
                "WHERE id = ANY(%(r)s) "
                "UNION ALL SELECT id, 'association', status, '', id FROM association WHERE id = ANY(%(r)s)",
                {"r": refs}).fetchall()
            state.objects = {r[0]: submission.Existing(*r) for r in rows}
            # Lock what a replacement will deprecate, so that two replacements cannot both win.
            conn.execute("SELECT 1 FROM document_entry WHERE id = ANY(%s) FOR UPDATE", (refs,))
            for target, source in conn.execute(
                    "SELECT a.target, a.source FROM association a JOIN document_entry d ON d.id = a.source "
                    "WHERE a.target = ANY(%s) AND a.type = ANY(%s) AND d.status = %s",
                    (refs, [rim.APND, rim.XFRM], rim.APPROVED)):
                state.dependents.setdefault(target, []).append(source)
            for target, folder in conn.execute(
                    "SELECT a.target, a.source FROM association a JOIN folder f ON f.id = a.source "
                    "WHERE a.target = ANY(%s) AND a.type = %s", (refs, rim.HAS_MEMBER)):
                state.folders_of.setdefault(target, []).append(folder)
        return state

    def _write(self, conn: psycopg.Connection, objects: ObjectList, effects: submission.Effects,
               submitted_at: str) -> None:
        ss = objects.of_kind("submission_set")[0]
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO submission_set (id, unique_id, patient_id, status, source_id, submission_time, "
                "content_type, author_person, home, xml) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                _submission_set_row(ss))
            docs = objects.of_kind("document_entry")
            if docs:
                cur.executemany(f"INSERT INTO document_entry ({_DOCUMENT_COLUMNS}) VALUES "
                                f"({', '.join(['%s'] * 24)})", [_document_row(d, ss.id) for d in docs])
            folders = objects.of_kind("folder")
            if folders:
                cur.executemany(
                    "INSERT INTO folder (id, lid, unique_id, patient_id, status, last_update_time, code_list, "
                    "home, xml) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(f.id, f.lid, f.unique_id, f.patient_id, f.status, submitted_at,
                      _codes(f, rim.FOL_CODE_LIST), f.home, _xml(f)) for f in folders])
            assocs = objects.of_kind("association") + effects.new_associations
            if assocs:
                cur.executemany(
                    "INSERT INTO association (id, type, source, target, status, submission_set, xml) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)", [_association_row(a, ss.id) for a in assocs])
            if effects.deprecate:
                cur.execute("UPDATE document_entry SET status = %s WHERE id = ANY(%s)",
                            (rim.DEPRECATED, effects.deprecate))
            if effects.touched_folders:
                cur.execute("UPDATE folder SET last_update_time = %s WHERE id = ANY(%s)",
                            (submitted_at, effects.touched_folders))


_DOCUMENT_COLUMNS = ("id, lid, unique_id, patient_id, status, on_demand, hash, size, repository_unique_id, "
                     "creation_time, service_start_time, service_stop_time, class_code, type_code, "
                     "practice_setting, facility_type, event_code, confidentiality, format_code, author_person, "
                     "reference_id, submission_set, home, xml")


def _xml(obj: RegistryObject) -> bytes:
    return rim.to_bytes(obj)


def _codes(obj: RegistryObject, scheme: str) -> list[str]:
    return [code_key(c) for c in obj.codes(scheme)]


def _authors(obj: RegistryObject) -> list[str]:
    return [p for c in obj.codes(rim.AUTHOR_SCHEME[obj.kind]) for p in c.slot("authorPerson")]


def _time(obj: RegistryObject, name: str) -> str | None:
    value = obj.slot_value(name)
    return dtm_key(value) if value else None


def _submission_set_row(ss: RegistryObject) -> tuple:
    return (ss.id, ss.unique_id, ss.patient_id, ss.status, ss.external_id(rim.SS_SOURCE_ID),
            dtm_key(ss.slot_value("submissionTime") or ""), _codes(ss, rim.SS_CONTENT_TYPE),
            _authors(ss), ss.home, _xml(ss))


def _association_row(a: RegistryObject, ss_id: str) -> tuple:
    return (a.id, a.association_type, a.source, a.target, a.status, ss_id, _xml(a))


def _document_row(d: RegistryObject, ss_id: str) -> tuple:
    size = d.slot_value("size")
    return (d.id, d.lid, d.unique_id, d.patient_id, d.status, d.object_type == rim.ON_DEMAND,
            (d.slot_value("hash") or "").lower() or None, int(size) if size else None,
            d.slot_value("repositoryUniqueId"), _time(d, "creationTime"), _time(d, "serviceStartTime"),
            _time(d, "serviceStopTime"), _codes(d, rim.DE_CLASS_CODE), _codes(d, rim.DE_TYPE_CODE),
            _codes(d, rim.DE_PRACTICE_SETTING), _codes(d, rim.DE_HCFT_CODE), _codes(d, rim.DE_EVENT_CODE),
            _codes(d, rim.DE_CONFIDENTIALITY), _codes(d, rim.DE_FORMAT_CODE), _authors(d),
            d.slot(rim.REFERENCE_ID_LIST), ss_id, d.home, _xml(d))
