"""Plays NIST test plans against a live registry: ITI-8 over MLLP, ITI-42/18/51/57 over SOAP 1.2.

Remembers, like the toolkit's log files, what every step assigned and reported, so later steps and
other tests (``UseId testdir="../../12346/..."``) can refer to it. Sections run at most once; asking
for a section first runs the earlier sections of its test, and a reference to another test's
section runs that section first.
"""
from __future__ import annotations

import datetime as dt
import socket
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Callable

from lxml import etree

from affinity_domain import soap
from tests.conformance import nist_kit as kit

MLLP_START, MLLP_END = b"\x0b", b"\x1c\x0d"


def adt_a01(patient_id: str) -> bytes:
    """An ITI-8 admit (HL7 v2.3.1 ADT^A01) announcing an affinity-domain patient id."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d%H%M%S")
    segments = [
        f"MSH|^~\\&|NIST_KIT|XDSI_TESTS|XDSI_REGISTRY|XDSI|{now}||ADT^A01^ADT_A01|{uuid.uuid4().hex[:20]}|P|2.3.1",
        f"EVN|A01|{now}",
        f"PID|||{patient_id}||KIT^PATIENT^^^^^L||19700101|M",
        "PV1||I",
    ]
    return ("\r".join(segments) + "\r").encode()


def mllp_send(address: tuple[str, int], message: bytes, timeout: float = 30) -> bytes:
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(MLLP_START + message + MLLP_END)
        data = b""
        while MLLP_END not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.strip(MLLP_START).split(MLLP_END)[0]


def ack_code(ack: bytes) -> str:
    for segment in ack.decode(errors="replace").split("\r"):
        if segment.startswith("MSA|"):
            return segment.split("|")[1]
    return ""


def soap_post(url: str, action: str, envelope: bytes, timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=envelope, method="POST", headers={
        "Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, _root_part(reply.headers.get("Content-Type", ""), reply.read())
    except urllib.error.HTTPError as err:      # SOAP faults come back as 4xx/5xx with an envelope
        return err.code, _root_part(err.headers.get("Content-Type", ""), err.read())


def _root_part(content_type: str, body: bytes) -> bytes:
    """The SOAP envelope of an answer, also when it comes as MTOM/XOP multipart/related."""
    if not content_type.lower().startswith("multipart/"):
        return body
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return next(message.iter_parts()).get_payload(decode=True)


class FeedRejected(Exception):
    pass


@dataclass
class StepResult:
    section: str
    step: kit.Step
    problems: list[str]
    request_file: Path | None = None
    answer: kit.Answer | None = None
    http_status: int | None = None

    def describe(self) -> str:
        lines = [f"{self.section} step {self.step.id} ({self.step.transaction}):"]
        lines += [f"  - {p}" for p in self.problems]
        if self.answer is not None:
            lines.append(f"  answer: HTTP {self.http_status}, status {self.answer.status}, errors "
                         + (", ".join(f"{e.code} [{e.context[:160]}]" for e in self.answer.errors) or "none"))
        expected = self.step.expected_status + "".join(
            f", {x}" for x in (self.step.expected_error_message, self.step.expected_error_code) if x)
        lines.append(f"  plan expects: {expected}; contents {self.step.expected_contents or '-'}")
        if self.request_file:
            lines.append(f"  request: {self.request_file}")
        return "\n".join(lines)


class _TestLinkage:
    """The symbols one test sees: its own fed patient, and the logs of every step run so far."""

    def __init__(self, runner: Runner, test: str):
        self.runner, self.test = runner, test

    def step_log(self, test: str, section: str, step: str) -> kit.StepLog:
        return self.runner.step_log(test, section, step)

    def feed_patient(self, feed_test: str) -> str:
        if feed_test in ("15817", "15818"):       # "the" patient of the test at hand
            return self.runner.patient(self.test)
        if feed_test == "15817b":                 # a second known patient of the same test
            return self.runner.patient(self.test + "#alt")
        return self.runner.patient(feed_test)     # 15819/15820: the two MPQ patients, one per session

    @property
    def patient_id(self) -> str:
        return self.runner.patient(self.test)

    @property
    def unknown_patient_id(self) -> str:
        return kit.new_patient_id()                # never fed: the registry must not know it


@dataclass
class Runner:
    url: str
    feed_address: tuple[str, int]
    dump_dir: Path | None = None
    patients: dict[str, str] = field(default_factory=dict)
    logs: dict[tuple[str, str, str], kit.StepLog] = field(default_factory=dict)
    results: dict[tuple[str, str], list[StepResult]] = field(default_factory=dict)
    assertion: Callable[[], etree._Element] | None = None     # the XUA assertion each request carries

    def patient(self, key: str) -> str:
        if key not in self.patients:
            pid = kit.new_patient_id()
            ack = mllp_send(self.feed_address, adt_a01(pid))
            if ack_code(ack) != "AA":
                raise FeedRejected(f"ITI-8 ADT^A01 for {pid} answered {ack!r}, expected MSA AA")
            self.patients[key] = pid
        return self.patients[key]

    def step_log(self, test: str, section: str, step: str) -> kit.StepLog:
        if (test, section) not in self.results:
            self.run_section(test, section)
        if (test, section, step) not in self.logs:
            raise kit.KitError(f"{test}/{section} has no step {step}")
        return self.logs[(test, section, step)]

    def run_test(self, test: str) -> list[StepResult]:
        return [r for name in kit.section_names(test) for r in self.run_section(test, name)]

    def run_section(self, test: str, name: str) -> list[StepResult]:
        if (test, name) in self.results:
            return self.results[(test, name)]
        for earlier in kit.section_names(test):
            if earlier == name:
                break
            self.run_section(test, earlier)
        self.results[(test, name)] = results = []      # set first: a failing section must not rerun
        section = kit.load_section(test, name)
        link = _TestLinkage(self, test)
        previous = None
        for step in section.steps:
            result = self._run_step(section, step, link, previous)
            results.append(result)
            previous = result.answer.body if result.answer else previous
        return results

    def _run_step(self, section: kit.Section, step: kit.Step, link, previous) -> StepResult:
        key = (section.test, section.name, step.id)
        self.logs[key] = kit.StepLog()
        if step.transaction == "NewPatientId":
            return StepResult(section.key, step, [])
        if step.transaction == "Null":
            return StepResult(section.key, step, kit.check_assertions(step, previous))
        if step.transaction == "PatientIdentityFeed":
            try:
                link.patient_id
                return StepResult(section.key, step, [])
            except FeedRejected as err:
                return StepResult(section.key, step, [str(err)])
        try:
            if kit.uses_now(step, section):
                # Ranges end exclusively at second precision: wait for the next second so that
                # everything already written is strictly before $now$ (the toolkit runs at human pace).
                time.sleep(1 - dt.datetime.now().microsecond / 1e6)
            prepared = kit.prepare(step, section, link)
        except (kit.KitError, FeedRejected) as err:
            return StepResult(section.key, step, [f"could not prepare the request: {err}"])
        self.logs[key] = prepared.log
        action = kit.action_for(step)
        envelope = kit.envelope(prepared.request, action, self.url,
                                (soap.security_header(self.assertion()),) if self.assertion else ())
        request_file = self._dump(section, step, "request", envelope)
        try:
            http_status, raw = soap_post(self.url, action, envelope)
        except OSError as err:
            return StepResult(section.key, step, [f"no answer: {err}"], request_file)
        self._dump(section, step, "response", raw)
        try:
            answer = kit.read_answer(raw)
        except (etree.XMLSyntaxError, ValueError) as err:
            return StepResult(section.key, step, [f"unreadable answer (HTTP {http_status}): {err}: {raw[:300]!r}"],
                              request_file, http_status=http_status)
        prepared.log.answer = answer.body
        return StepResult(section.key, step, kit.grade(step, answer), request_file, answer, http_status)

    def _dump(self, section: kit.Section, step: kit.Step, kind: str, data: bytes) -> Path | None:
        if self.dump_dir is None:
            return None
        path = self.dump_dir / f"{section.test}-{section.name}-{step.id}-{kind}.xml"
        path.write_bytes(data)
        return path
