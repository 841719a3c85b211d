"""The patient-id domains as configured: each ``[pix] domains`` entry is an OID or a whole assigning
authority ``NS&OID&ISO``. A namespace configured with its OID resolves to that OID (ITI TF-2x
Appendix E allows an authority given by namespace alone once the domain maps one to the other), and
every id the PIX manager sends carries its domain's authority as configured."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from affinity_domain.hl7 import Cx

_OID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


@dataclass(frozen=True)
class Domains:
    oids: tuple[str, ...] = ()                                   # every configured domain
    namespace_of: dict[str, str] = field(default_factory=dict)   # OID -> namespace
    oid_of: dict[str, str] = field(default_factory=dict)         # namespace -> OID

    @classmethod
    def parse(cls, entries: tuple[str, ...] | list[str]) -> "Domains":
        """Raises ValueError naming a bad entry."""
        oids, namespace_of, oid_of = [], {}, {}
        for entry in entries:
            parts = entry.split("&")
            if len(parts) == 1:
                namespace, oid = "", parts[0]
            elif len(parts) == 3 and parts[2] == "ISO":
                namespace, oid = parts[0], parts[1]
            else:
                raise ValueError(f"[pix] domains: {entry!r} is neither an OID nor NS&OID&ISO")
            if not _OID.match(oid):
                raise ValueError(f"[pix] domains: {oid!r} is not an OID")
            if namespace in oid_of and oid_of[namespace] != oid:
                raise ValueError(f"[pix] domains: namespace {namespace!r} names two domains")
            oids.append(oid)
            if namespace:
                namespace_of[oid], oid_of[namespace] = namespace, oid
        return cls(tuple(oids), namespace_of, oid_of)

    def resolve(self, cx: Cx) -> Cx:
        """``cx`` with its domain's OID (found by namespace when it came without one) and the
        configured namespace; unchanged when neither is known."""
        oid = cx.authority or self.oid_of.get(cx.namespace, "")
        return Cx(cx.id, oid, self.namespace_of.get(oid, "")) if oid else cx

    def cx(self, pid: str, oid: str) -> Cx:
        """An id of ours to send: its domain's full authority ``NS&OID&ISO`` as configured."""
        return Cx(pid, oid, self.namespace_of.get(oid, ""))
