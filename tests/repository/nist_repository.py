"""Replays NIST XDS toolkit repository test plans (Provide and Register, Retrieve, raw HTTP
bodies) against our repository and registry. Reuses ``tests/conformance/nist_kit.py`` for what
it already does (loading query plans, preparing metadata, ebRIM 2.1→3.0, grading answers) and
adds the three transactions it does not know."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from lxml import etree
from affinity_domain import ns
from tests.conformance import nist_kit as kit  # noqa: E402

from tests.repository.pnr import Answer, mtom_message, post  # noqa: E402
from tests.xds import feed  # noqa: E402

# 11979 expects a submission set with two documents; nist_kit's checks have one-document shapes.
kit.CHECKS.setdefault("SSwithTwoDoc", lambda c, n: kit._ss_with(2, 0)(c, n) + kit._ss_approved(c, n))

TESTS = ("11966", "11979", "11981", "12369", "11983", "11986", "12029", "12021", "12360", "PnrXop", "PnrNoXop")


@dataclass
class Step:
    """A step of a transaction nist_kit does not parse."""
    id: str
    transaction: str                      # ProvideAndRegister | Retrieve | Http
    kit_step: kit.Step                    # expectations and metadata preparation, in kit's terms
    documents: dict[str, str] = field(default_factory=dict)      # symbolic id -> file
    reference_documents: dict[str, str] = field(default_factory=dict)   # uid symbol -> file
    headers: str = ""
    body_file: str = ""


def load(test: str, name: str) -> tuple[kit.Section, list]:
    """Steps as kit.Step (the transactions nist_kit knows) or Step (the others)."""
    directory = kit.KIT_TESTS / test / name
    root = etree.parse(str(directory / "testplan.xml")).getroot()
    section = kit.Section(test, name, directory, [])
    steps = []
    for el in root.iterfind("TestStep"):
        tx = next((c for c in el if isinstance(c.tag, str) and c.tag.endswith("Transaction")), None)
        kind = {"ProvideAndRegisterTransaction": "ProvideAndRegister", "RetrieveTransaction": "Retrieve",
                "HttpTransaction": "Http"}.get(tx.tag if tx is not None else "")
        if kind is None:
            steps.append(kit._step(el))
            continue
        # Let nist_kit read expectations and metadata options as if it were a Register step.
        clone = etree.fromstring(etree.tostring(el))
        t = next(c for c in clone if isinstance(c.tag, str) and c.tag.endswith("Transaction"))
        t.tag = "RegisterTransaction"
        for child in list(t):
            if isinstance(child.tag, str) and child.tag in ("Document", "ReferenceDocument", "Headers", "BodyFile",
                                                             "ReferenceMetadata"):
                t.remove(child)
        step = Step(el.get("id"), kind, kit._step(clone))
        for child in tx:
            if child.tag == "Document":
                step.documents[child.get("id")] = child.text.strip()
            elif child.tag == "ReferenceDocument":
                step.reference_documents[child.get("uid")] = child.text.strip()
            elif child.tag == "Headers":
                step.headers = child.text.strip()
            elif child.tag == "BodyFile":
                step.body_file = child.text.strip()
        steps.append(step)
    return section, steps


class Linkage:
    def __init__(self, runner: "Runner", test: str):
        self.runner, self.test = runner, test

    def step_log(self, test, section, step):
        return self.runner.step_log(test, section, step)

    def feed_patient(self, feed_test):
        return self.patient_id

    @property
    def patient_id(self):
        return self.runner.patient(self.test)

    @property
    def unknown_patient_id(self):
        return kit.new_patient_id()


@dataclass
class Result:
    key: str
    step: str
    problems: list[str]


class Runner:
    def __init__(self, registry, repository_url: str):
        self.registry, self.repository_url = registry, repository_url
        self.patients: dict[str, str] = {}
        self.logs: dict[tuple[str, str, str], kit.StepLog] = {}
        self.done: dict[tuple[str, str], list[Result]] = {}
        self.submitted: dict[str, bytes] = {}           # document uniqueId -> bytes sent
        self.mime_types: dict[str, str] = {}            # document uniqueId -> mimeType sent

    def patient(self, test: str) -> str:
        if test not in self.patients:
            pid = kit.new_patient_id()
            feed(self.registry, pid)
            self.patients[test] = pid
        return self.patients[test]

    def step_log(self, test, section, step) -> kit.StepLog:
        if (test, section) not in self.done:
            self.run_section(test, section)
        return self.logs.setdefault((test, section, step), kit.StepLog())

    def run_test(self, test: str) -> list[Result]:
        return [r for name in kit.section_names(test) for r in self.run_section(test, name)]

    def run_section(self, test: str, name: str) -> list[Result]:
        if (test, name) in self.done:
            return self.done[(test, name)]
        self.done[(test, name)] = results = []
        section, steps = load(test, name)
        link = Linkage(self, test)
        for step in steps:
            log = self.logs.setdefault((test, name, step.id), kit.StepLog())
            try:
                problems = self._run(section, step, link, log)
            except kit.KitError as e:
                problems = [f"could not prepare: {e}"]
            results.append(Result(section.key, step.id, problems))
        return results

    def _run(self, section, step, link, log: kit.StepLog) -> list[str]:
        if isinstance(step, kit.Step):
            if step.transaction == "PatientIdentityFeed":
                link.patient_id
                return []
            prepared = kit.prepare(step, section, link)
            log.assigned.update(prepared.log.assigned)
            from tests.xds import post as soap_post
            reply = soap_post(self.registry.url,
                              kit.envelope(prepared.request, kit.action_for(step), self.registry.url))
            answer = kit.read_answer(etree.tostring(reply.root))
            for name, where, xpath in step.reports:
                if where == "Result":
                    log.reports[name] = kit._first_string(answer.body.xpath(xpath))
            return kit.grade(step, answer)
        if step.transaction == "ProvideAndRegister":
            return self._provide(section, step, link, log)
        if step.transaction == "Retrieve":
            return self._retrieve(section, step, link)
        return self._http(section, step, link, log)

    def _provide(self, section, step: Step, link, log) -> list[str]:
        prepared = kit.prepare(step.kit_step, section, link)
        log.assigned.update(prepared.log.assigned)
        uuids = prepared.log.assigned.get("AssignedUuids", {})
        for symbolic, uid in prepared.log.assigned.get("AssignedUids", {}).items():
            log.reports[f"{symbolic}_uid"] = uid
        request = etree.Element(f"{{{ns.XDSB}}}ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": ns.XDSB})
        request.append(prepared.request)
        parts = []
        for symbolic, filename in step.documents.items():
            data = (section.directory / filename).read_bytes()
            cid = f"{uuid.uuid4().hex}@nist"
            doc = etree.SubElement(request, f"{{{ns.XDSB}}}Document", id=uuids.get(symbolic, symbolic))
            etree.SubElement(doc, f"{{{ns.XOP}}}Include", href=f"cid:{cid}")
            parts.append((cid, data))
            uid = prepared.log.assigned.get("AssignedUids", {}).get(symbolic)
            if uid:
                self.submitted[uid] = data
        for entry in prepared.request.iter(f"{{{ns.RIM}}}ExtrinsicObject"):
            for ei in kit.external_ids(entry, {kit.DE_UNIQUE_ID}):
                self.mime_types[ei.get("value")] = entry.get("mimeType")
        message, ctype = mtom_message(ns.PROVIDE_AND_REGISTER, etree.tostring(request, encoding="unicode"), parts)
        return self._grade(step, post(self.repository_url, message, ctype))

    def _grade(self, step: Step, answer: Answer) -> list[str]:
        if answer.root is None:
            return [f"HTTP {answer.status} with no SOAP answer"]
        graded = kit.read_answer(etree.tostring(answer.root))
        if graded.body is not None and graded.body.tag == f"{{{ns.XDSB}}}RetrieveDocumentSetResponse":
            # ITI-43 carries its status in the RegistryResponse inside
            inner = answer.registry_response
            graded = kit.Answer(inner.get("status", "").rsplit(":", 1)[-1], graded.errors, inner)
        problems = kit.grade(step.kit_step, graded)
        if problems:
            problems.append("errors: " + ", ".join(f"{e.code} [{e.context[:200]}]" for e in graded.errors))
        return problems

    def _retrieve(self, section, step: Step, link) -> list[str]:
        root = etree.parse(str(section.directory / step.kit_step.metadata_file)).getroot()
        for use in step.kit_step.use_reports:
            kit.substitute(root, use.use_as, kit.resolve_use_report(use, section, link))
        for use in step.kit_step.use_ids:
            if use.testdir and not use.testdir.startswith(".."):
                use.testdir = "../" + use.testdir      # 12021 names sibling sections from the test's root
            kit.substitute(root, use.symbol, kit.resolve_use_id(use, section, link))
        text = etree.tostring(root, encoding="unicode")
        if re.search(r"\$\w+\$", text):
            return [f"unresolved symbols in {text}"]
        answer = post(self.repository_url, *mtom_message(ns.RETRIEVE, text, []))
        problems = self._grade(step, answer)
        got = answer.documents() if not problems else {}
        for uid in (r.text for r in root.iter(f"{{{ns.XDSB}}}DocumentUniqueId")):
            if uid not in got:
                problems.append(f"document {uid} not returned")
            elif got[uid][1] != self.submitted.get(uid):
                problems.append(f"document {uid}: bytes differ from those submitted")
        # 12360 (text/goofy): the submitted mimeType comes back
        for uid, (mime, _) in got.items():
            if self.mime_types.get(uid) and mime != self.mime_types[uid]:
                problems.append(f"document {uid}: mimeType {mime}, submitted {self.mime_types[uid]}")
        return problems

    def _http(self, section, step: Step, link, log) -> list[str]:
        """A captured message sent as it is, but for a fed patient and fresh uniqueIds."""
        ctype = re.sub(r"(?i)^content-type:\s*", "", step.headers.strip())
        body = (section.directory / step.body_file).read_bytes()
        start = re.search(rb"<(\?xml|[\w.-]*:?Envelope)", body).start()
        xml = body[start:body.index(b"Envelope>", start) + len("Envelope>")]
        root = etree.fromstring(xml)
        replacements = {}
        for ei in root.iter(f"{{{ns.RIM}}}ExternalIdentifier"):
            scheme, value, owner = ei.get("identificationScheme"), ei.get("value"), ei.get("registryObject")
            if scheme in kit.UNIQUE_ID_SCHEMES:
                replacements[value] = kit.new_uid()
                log.assigned.setdefault("AssignedUids", {})[
                    "SubmissionSet01" if scheme == kit.SS_UNIQUE_ID else "Document01"] = replacements[value]
                log.reports.setdefault(f"{owner}_uid", replacements[value])
            elif scheme in kit.PATIENT_ID_SCHEMES:
                replacements[escape(value)] = escape(link.patient_id)
        for old, new in replacements.items():
            body = body.replace(old.encode(), new.encode())
        return self._grade(step, post(self.repository_url, body, ctype))
