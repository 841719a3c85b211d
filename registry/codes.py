"""The affinity domain's code sets: which (code, codingScheme) each coded attribute may take.

The registry ships its own (``code_sets.toml``, the connectathon's); ``[registry] codes_file``
replaces them with a file of the same shape, or with a NIST-toolkit style ``codes.xml``."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from affinity_domain import xmlsafe
from affinity_domain.config import ConfigError

SHIPPED = Path(__file__).with_name("code_sets.toml")


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


def from_nist_xml(data: bytes) -> CodeSets:
    """A NIST-toolkit style ``codes.xml`` (CodeType/Code elements)."""
    root = xmlsafe.parse(data)
    sets = CodeSets()
    for code_type in root.iter("CodeType"):
        codes = {(c.get("code", ""), c.get("codingScheme", "")) for c in code_type.iter("Code")}
        if code_type.get("name") == "mimeType":
            sets.mime_types = {c for c, _ in codes}
        elif code_type.get("classScheme"):
            sets.by_scheme[code_type.get("classScheme")] = codes
    return sets


def from_toml(text: str) -> CodeSets:
    """Our format (see ``code_sets.toml``): a table per <object>.<attribute>, one line per code."""
    sets = CodeSets()
    for obj, attributes in tomllib.loads(text).items():
        for name, table in attributes.items():
            if name == "mimeType":
                sets.mime_types = set(table["codes"])
            elif "classScheme" in table:
                sets.by_scheme[table["classScheme"]] = {(c["code"], c["codingScheme"]) for c in table["codes"]}
            else:
                raise ValueError(f"{obj}.{name} has no classScheme")
    return sets


def load(path: Path) -> CodeSets:
    try:
        data = path.read_bytes()
        if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
            return from_nist_xml(data)
        return from_toml(data.decode("utf-8"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"[registry] codes_file {path}: {e}") from None


def from_config(validate_codes: bool, codes_file: str = "") -> CodeSets:
    """``[registry] validate_codes`` and ``codes_file`` (empty: the code sets shipped with xdsi)."""
    if not validate_codes:
        return CodeSets()
    return load(Path(codes_file) if codes_file else SHIPPED)
