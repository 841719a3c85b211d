"""The affinity domain's code sets: which (code, codingScheme) each coded attribute may take."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from affinity_domain import xmlsafe

log = logging.getLogger("xdsi.registry.codes")


@dataclass
class CodeSets:
    by_scheme: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # classScheme -> codes
    mime_types: set[str] = field(default_factory=set)

    @property
    def enabled(self) -> bool:
        return bool(self.by_scheme)

    def allows(self, class_scheme: str, code: str, coding_scheme: str) -> bool:
        allowed = self.by_scheme.get(class_scheme)
        return allowed is None or (code, coding_scheme) in allowed


def load(path: Path) -> CodeSets:
    """Read a NIST-toolkit style ``codes.xml`` (CodeType/Code elements)."""
    root = xmlsafe.parse(path.read_bytes())
    sets = CodeSets()
    for code_type in root.iter("CodeType"):
        codes = {(c.get("code", ""), c.get("codingScheme", "")) for c in code_type.iter("Code")}
        if code_type.get("name") == "mimeType":
            sets.mime_types = {c for c, _ in codes}
        elif code_type.get("classScheme"):
            sets.by_scheme[code_type.get("classScheme")] = codes
    return sets


def default_path() -> Path | None:
    """The NIST test kit's code sets beside the project (``../shared``), when present."""
    here = Path(__file__).resolve().parent.parent
    for base in (Path.cwd(), here):
        candidate = base.parent / "shared" / "nist-testkit" / "codes.xml"
        if candidate.exists():
            return candidate
    return None


def from_config(section: dict) -> CodeSets:
    if not section.get("validate_codes", True):
        return CodeSets()
    path = Path(section["codes_file"]) if section.get("codes_file") else default_path()
    if path is None:
        log.warning("no code sets found: coded values are not checked")
        return CodeSets()
    return load(path)
