"""The DICOMweb door: WSGI requests under ``/dicomweb`` → the cores (``qido``, ``wado``, ``instance``,
``rendered``) over the index and the image store → streamed responses. UIDs in a path are checked
(``is_uid``) and only ever looked up in the index; files are found by the sha1 the index holds.
An opted-out patient's studies are left out of searches and answered 404, as RAD-69 answers them
unknown; DICOMweb carries no XUA assertion, so there is no break-glass here."""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import parse_qsl

import psycopg
import psycopg_pool
from pydicom.uid import ExplicitVRLittleEndian

from affinity_domain import consent, metrics, web
from affinity_domain.content import FileStore

from ..indexer import NotIndexed
from ..store import Index
from . import instance, multipart, qido, rendered, wado
from .errors import DicomWebError, bad, checked_uid, not_acceptable, not_found

log = logging.getLogger("xdsi.imaging_source")
PATH = "/dicomweb"
_UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout)
_UID = r"([^/]+)"
_STUDY = f"/studies/{_UID}"
_SERIES = f"{_STUDY}/series/{_UID}"
_INSTANCE = f"{_SERIES}/instances/{_UID}"


@dataclass
class Response:
    status: str
    headers: list[tuple[str, str]]
    body: Iterable[bytes]


@dataclass(frozen=True)
class Limits:
    max_results: int = 1000
    bulk_data_bytes: int = 1024
    max_frames: int = 1000
    base_url: str = ""               # empty: from the request


@dataclass
class Request:
    environ: dict
    params: list[tuple[str, str]] = field(default_factory=list)

    def param(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.params if k == name), default)

    @property
    def accept(self) -> str:
        return self.param("accept") or self.environ.get("HTTP_ACCEPT", "")


def _params(environ) -> list[tuple[str, str]]:
    try:
        pairs = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True, errors="strict",
                          max_num_fields=200)
    except UnicodeDecodeError:
        raise bad("the query string is not UTF-8") from None
    except ValueError as e:
        raise bad(f"the query string: {e}") from None
    return [(k, web.checked_text(v, k)) for k, v in pairs]


class DicomWeb:
    def __init__(self, index: Index, content: FileStore, limits: Limits, default_base: str,
                 registry_url: str = "", consent_timeout: float = 10.0):
        self.index, self.content, self.limits, self.default_base = index, content, limits, default_base
        self.consent_url = consent.withheld_url(registry_url) if registry_url else ""
        self.consent_timeout = consent_timeout
        search = self.search
        self.routes: list[tuple[re.Pattern, str, object]] = [(re.compile(p), name, h) for p, name, h in (
            ("/studies", "QIDO-RS studies", lambda r: search(r, "studies", {})),
            (f"{_STUDY}/series", "QIDO-RS series", lambda r, st: search(r, "series", {"StudyInstanceUID": st})),
            ("/series", "QIDO-RS series", lambda r: search(r, "series", {})),
            (f"{_SERIES}/instances", "QIDO-RS instances",
             lambda r, st, se: search(r, "instances", {"StudyInstanceUID": st, "SeriesInstanceUID": se})),
            (f"{_STUDY}/instances", "QIDO-RS instances",
             lambda r, st: search(r, "instances", {"StudyInstanceUID": st})),
            ("/instances", "QIDO-RS instances", lambda r: search(r, "instances", {})),
            (_STUDY, "WADO-RS study", self.retrieve),
            (_SERIES, "WADO-RS series", self.retrieve),
            (_INSTANCE, "WADO-RS instance", self.retrieve),
            (f"{_STUDY}/metadata", "WADO-RS metadata", self.metadata),
            (f"{_SERIES}/metadata", "WADO-RS metadata", self.metadata),
            (f"{_INSTANCE}/metadata", "WADO-RS metadata", self.metadata),
            (f"{_INSTANCE}/bulkdata/([0-9A-Fa-f]{{8}})", "WADO-RS bulkdata", self.bulkdata),
            (f"{_INSTANCE}/frames/([^/]+)", "WADO-RS frames", self.frames),
            (f"{_INSTANCE}/rendered", "WADO-RS rendered", self.rendered),
            (f"{_INSTANCE}/frames/([^/]+)/rendered", "WADO-RS rendered", self.rendered),
            (f"{_STUDY}/thumbnail", "WADO-RS thumbnail", self.thumbnail),
            (f"{_SERIES}/thumbnail", "WADO-RS thumbnail", self.thumbnail),
            (f"{_INSTANCE}/thumbnail", "WADO-RS thumbnail", self.thumbnail),
            (f"{_INSTANCE}/frames/([^/]+)/thumbnail", "WADO-RS thumbnail", self.thumbnail),
            ("/wado", "WADO-URI", self.wado_uri),
        )]

    # ------------------------------------------------------------ WSGI

    def __call__(self, environ, start_response):
        started, name = time.perf_counter(), ""
        path = environ.get("PATH_INFO", "")[len(PATH):].rstrip("/") or "/"
        try:
            handler, name, groups = self._find(path)
            if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
                raise DicomWebError("405 Method Not Allowed", "DICOMweb here is read-only: use GET",
                                    [("Allow", "GET, HEAD")])
            if environ.get(web.BODY_REFUSED):
                raise DicomWebError("413 Payload Too Large", "a GET has no body")
            response = handler(Request(environ, _params(environ)), *groups)
        except DicomWebError as e:
            response = _error(e.status, e.message, e.headers)
        except NotIndexed as e:
            log.error("DICOMweb refused", extra={"reason": str(e)})
            response = _error("503 Service Unavailable", "instances received are not all indexed yet",
                              [("Retry-After", "5")])
        except _UNAVAILABLE as e:
            log.error("database unavailable", extra={"error": str(e)})
            response = _error("503 Service Unavailable", "the source's database is unavailable",
                              [("Retry-After", "5")])
        except Exception:
            log.exception("DICOMweb request failed", extra={"path": path})
            response = _error("500 Internal Server Error", "the service failed to process the request")
        if name:
            metrics.observe(name, "success" if response.status[0] in "23" else "failure", response.status[:3],
                            time.perf_counter() - started)
        start_response(response.status, response.headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else response.body

    def _find(self, path: str):
        for regex, name, handler in self.routes:
            match = regex.fullmatch(path)
            if match:
                return handler, name, match.groups()
        raise not_found(f"nothing at {PATH}{path}; see PS3.18 for the resources served")

    def _withheld(self, studies: set[str]) -> set[str]:
        """Of ``studies``, those of opted-out patients (the registry knows whose manifests they are);
        audited. No answer from the registry: nothing is served (503)."""
        if not self.consent_url or not studies:
            return set()
        try:
            withheld = consent.ask_withheld(self.consent_url, studies=sorted(studies),
                                            timeout=self.consent_timeout)["studies"]
        except consent.ConsentUnavailable as e:
            log.error("DICOMweb refused: consent unknown", extra={"error": str(e)})
            raise DicomWebError("503 Service Unavailable", "the registry cannot say whose studies these are "
                                "(patient consent): nothing is served", [("Retry-After", "5")]) from None
        if withheld:
            consent.record(sorted(set(withheld.values())), None, node="xdsi-imaging-source",
                           transaction="DICOMweb")
        return set(withheld)

    def base_url(self, environ) -> str:
        return self.limits.base_url.rstrip("/") or f"{environ.get('wsgi.url_scheme', 'http')}://{self.default_base}"

    # ------------------------------------------------------------ QIDO-RS

    def search(self, r: Request, resource: str, fixed: dict[str, str]) -> Response:
        kinds = [m.type for m in wado.accept(r.accept)]
        if not any(k in ("application/dicom+json", "application/json", "*/*", "application/*") for k in kinds):
            raise not_acceptable("QIDO-RS answers application/dicom+json")
        s = qido.parse(resource, fixed, r.params, self.limits.max_results)
        rows = self.index.find(s.level, s.conditions, s.limit + 1, s.offset)
        hidden = self._withheld({row["study_uid"] for row in rows})
        rows = [row for row in rows if row["study_uid"] not in hidden]
        headers = [("Warning", f'299 xdsi "{w}"') for w in s.warnings]
        if len(rows) > s.limit:
            rows = rows[: s.limit]
            headers.append(("Warning", '299 xdsi "There are more matches: ask again with a larger offset"'))
        if not rows:
            return Response("204 No Content", headers, [])
        base = self.base_url(r.environ)
        data = json.dumps([qido.answer(s, row, base) for row in rows]).encode()
        return Response("200 OK", [("Content-Type", wado.DICOM_JSON), ("Content-Length", str(len(data))),
                                   *headers], [data])

    # ------------------------------------------------------------ WADO-RS

    def _rows(self, study: str, series: str | None = None, sop: str | None = None) -> list[dict]:
        checked_uid(study, "StudyInstanceUID")
        for uid, what in ((series, "SeriesInstanceUID"), (sop, "SOPInstanceUID")):
            if uid is not None:
                checked_uid(uid, what)
        rows = self.index.instances(study_uids=[study], series_uids=[series] if series else [],
                                    sop_uids=[sop] if sop else [])
        rows = [row for row in rows if self.content.path(row["sha1"]).exists() or _missing(row)]
        if not rows or self._withheld({study}):
            raise not_found("no such " + ("instance" if sop else "series" if series else "study") + " here")
        return rows

    def _url(self, environ, row: dict) -> str:
        return (f"{self.base_url(environ)}/studies/{row['study_uid']}/series/{row['series_uid']}"
                f"/instances/{row['sop_uid']}")

    def retrieve(self, r: Request, study: str, series: str | None = None, sop: str | None = None) -> Response:
        wanted = wado.syntaxes(wado.accept(r.accept))
        rows = self._rows(study, series, sop)
        plan = [(row, wado.outgoing(row["transfer_syntax"], wanted)) for row in rows]
        sent = [(row, ts) for row, ts in plan if ts]
        if not sent:
            raise not_acceptable(f"no instance can be sent in {', '.join(wanted)} (stored in "
                                 f"{', '.join(sorted({row['transfer_syntax'] for row in rows}))})")
        headers = []
        if len(sent) < len(plan):
            headers.append(("Warning", f'299 xdsi "{len(plan) - len(sent)} instance(s) not sent: stored in a '
                                       'transfer syntax that cannot be converted to one accepted"'))
        boundary = multipart.boundary()
        syntaxes = {ts for _, ts in sent}
        content_type = multipart.content_type(boundary, wado.DICOM, syntaxes.pop() if len(syntaxes) == 1 else "")

        def part(row, ts):
            path = self.content.path(row["sha1"])
            chunks = (lambda: multipart.file_chunks(path)) if ts == row["transfer_syntax"] else \
                (lambda: [instance.reencoded(path, row["transfer_syntax"], ts)])
            return f"{wado.DICOM}; transfer-syntax={ts}", self._url(r.environ, row), chunks
        body = multipart.body(boundary, (part(row, ts) for row, ts in sent))
        return Response("200 OK", [("Content-Type", content_type), *headers], body)

    def metadata(self, r: Request, study: str, series: str | None = None, sop: str | None = None) -> Response:
        kinds = [m.type for m in wado.accept(r.accept)]
        if not any(k in ("application/dicom+json", "application/json", "*/*", "application/*") for k in kinds):
            raise not_acceptable("metadata is application/dicom+json")
        rows = self._rows(study, series, sop)
        threshold = self.limits.bulk_data_bytes

        def items():
            first = True
            yield b"["
            for row in rows:
                try:
                    item = instance.metadata(self.content.path(row["sha1"]), self._url(r.environ, row), threshold)
                except Exception as e:         # one unreadable instance does not stop the others
                    log.warning("DICOMweb metadata: instance left out", extra={"sop": row["sop_uid"],
                                                                               "error": str(e)})
                    continue
                yield (b"" if first else b",") + json.dumps(item).encode()
                first = False
            yield b"]"
        return Response("200 OK", [("Content-Type", wado.DICOM_JSON)], items())

    def frames(self, r: Request, study: str, series: str, sop: str, frame_list: str) -> Response:
        numbers = wado.frame_numbers(frame_list, self.limits.max_frames)
        return self._frames(r, self._rows(study, series, sop)[0], numbers)

    def _frames(self, r: Request, row: dict, numbers: list[int] | None) -> Response:
        stored = row["transfer_syntax"]
        frames = instance.Frames(self.content.path(row["sha1"]), stored)
        numbers = numbers or list(range(1, frames.count + 1))
        frames.check(numbers)
        media = wado.frame_type(stored, wado.accept(r.accept))
        if media is None:
            raise not_acceptable(f"frames of this instance are {wado.FRAME_TYPES.get(stored, wado.OCTETS)} "
                                 f"({stored}); they are not converted")
        ts = ExplicitVRLittleEndian if frames.native else stored
        boundary = multipart.boundary()
        url = self._url(r.environ, row)
        parts = ((f"{media}; transfer-syntax={ts}", f"{url}/frames/{n}", (lambda data=data: [data]))
                 for n, data in zip(numbers, frames.read(numbers)))
        return Response("200 OK", [("Content-Type", multipart.content_type(boundary, media))],
                        multipart.body(boundary, parts))

    def bulkdata(self, r: Request, study: str, series: str, sop: str, tag: str) -> Response:
        row = self._rows(study, series, sop)[0]
        if int(tag, 16) == instance.PIXEL_DATA:
            return self._frames(r, row, None)
        if not any(wado.accepts(m, wado.OCTETS) for m in wado.accept(r.accept)):
            raise not_acceptable('bulk data is multipart/related; type="application/octet-stream"')
        data = instance.element_bytes(self.content.path(row["sha1"]), tag, self.limits.bulk_data_bytes)
        boundary = multipart.boundary()
        return Response("200 OK", [("Content-Type", multipart.content_type(boundary, wado.OCTETS))],
                        multipart.body(boundary, [(wado.OCTETS, "", lambda: [data])]))

    # ------------------------------------------------------------ rendered

    def rendered(self, r: Request, study: str, series: str, sop: str, frame: str = "1",
                 size: tuple[int, int] | None = None) -> Response:
        numbers = wado.frame_numbers(frame, 1)
        media = rendered.media_type(r.accept)
        row = self._rows(study, series, sop)[0]
        return self._render(row, numbers[0], media, rendered.viewport(r.param("viewport")) or size,
                            rendered.window(r.param("window")), rendered.quality(r.param("quality")))

    def _render(self, row, frame: int, media: str, size, voi, jpeg_quality) -> Response:
        try:
            data = rendered.render(self.content.path(row["sha1"]), frame, media, size, voi, jpeg_quality)
        except DicomWebError:
            raise
        except Exception as e:           # no pixel data, or a compression pydicom cannot decode here
            raise not_acceptable(f"instance {row['sop_uid']} cannot be rendered: {type(e).__name__}: {e}"[:300])
        return Response("200 OK", [("Content-Type", media), ("Content-Length", str(len(data)))], [data])

    def thumbnail(self, r: Request, study: str, series: str | None = None, sop: str | None = None,
                  frame: str = "1") -> Response:
        if sop is not None:
            return self.rendered(r, study, series, sop, frame, rendered.THUMBNAIL)
        rows = self._rows(study, series)
        row = rows[len(rows) // 2]          # the middle instance stands for its series or study
        media = rendered.media_type(r.accept)
        return self._render(row, 1, media, rendered.viewport(r.param("viewport")) or rendered.THUMBNAIL, None, 90)

    # ------------------------------------------------------------ WADO-URI

    def wado_uri(self, r: Request) -> Response:
        if r.param("requestType") != "WADO":
            raise bad("requestType must be WADO")
        uids = [r.param(name) for name in ("studyUID", "seriesUID", "objectUID")]
        if not all(uids):
            raise bad("studyUID, seriesUID and objectUID are required")
        if r.param("anonymize"):
            raise bad("anonymize is not supported")
        row = self._rows(*uids)[0]
        path = self.content.path(row["sha1"])
        wanted_types = [t.split(";")[0].strip().lower() for t in r.param("contentType").split(",") if t.strip()]
        for kind in wanted_types or ["image/jpeg", wado.DICOM]:
            if kind in rendered.TYPES:
                size = None
                if r.param("rows") or r.param("columns"):        # one of them alone bounds both ways
                    rows, columns = r.param("rows") or r.param("columns"), r.param("columns") or r.param("rows")
                    size = rendered.viewport(f"{columns},{rows}")
                voi = rendered.window(f"{r.param('windowCenter')},{r.param('windowWidth')}") \
                    if r.param("windowCenter") or r.param("windowWidth") else None
                q = r.param("imageQuality")
                try:
                    return self._render(row, wado.frame_numbers(r.param("frameNumber", "1"), 1)[0], kind, size,
                                        voi, rendered.quality(q))
                except DicomWebError as e:
                    if wanted_types or not e.status.startswith("406"):
                        raise
            elif kind in (wado.DICOM, "*/*"):
                asked = r.param("transferSyntax")
                if asked:
                    checked_uid(asked, "transferSyntax")
                ts = wado.outgoing(row["transfer_syntax"], [asked] if asked else [ExplicitVRLittleEndian, wado.ANY])
                if ts is None:
                    raise not_acceptable(f"the instance is stored in {row['transfer_syntax']}; it is not "
                                         f"converted to {asked}")
                if ts == row["transfer_syntax"]:
                    return Response("200 OK", [("Content-Type", wado.DICOM),
                                               ("Content-Length", str(path.stat().st_size))],
                                    multipart.file_chunks(path))
                data = instance.reencoded(path, row["transfer_syntax"], ts)
                return Response("200 OK", [("Content-Type", wado.DICOM), ("Content-Length", str(len(data)))],
                                [data])
        raise not_acceptable("contentType must be application/dicom, image/jpeg or image/png")


def _missing(row: dict) -> bool:
    log.error("DICOMweb: instance indexed but its bytes are missing", extra={"sop": row["sop_uid"]})
    return False


def _error(status: str, message: str, headers: list[tuple[str, str]] = ()) -> Response:
    data = json.dumps({"error": message}).encode()
    return Response(status, [("Content-Type", web.JSON_TYPE), ("Content-Length", str(len(data))), *headers], [data])


def app(index: Index, content: FileStore, s) -> DicomWeb:
    """The door for an imaging source's settings."""
    return DicomWeb(index, content, Limits(s.dicomweb_max_results, s.dicomweb_bulk_data_bytes,
                                           s.dicomweb_max_frames, s.dicomweb_base_url),
                    f"{s.host}:{s.port}{PATH}", s.registry_url)
