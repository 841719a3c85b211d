"""Reconcile a Part-10 instance by re-encoding only the elements reconciliation touches.

pydicom decodes and encodes a few microseconds' worth per element: for a CT of 280 elements,
decoding, reconciling and encoding the whole instance for C-STORE was most of the consumer's time
per instance, although reconciliation changes a handful of top-level elements. Here the instance
is walked once for its top-level element boundaries (``affinity_domain.part10``); the elements
``rules.reconcile`` reads or writes are decoded into a small dataset and reconciled by that same
function; the result is the original bytes with just those elements replaced: the bytes pydicom
would have written for the whole reconciled dataset (the tests compare the two).

A study's instances carry those elements byte for byte alike (one patient, one accession, one
procedure), so a ``Reconciler`` works out each distinct set of them once; the study's other
instances are only spliced.
"""
from __future__ import annotations

from io import BytesIO

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from affinity_domain import part10
from affinity_domain.dicom_net import EncodedInstance
from affinity_domain.outside import OUTSIDE_GROUP

from . import rules

# The top-level elements rules.reconcile reads or writes, besides the outside-marker group.
RECONCILED = {
    0x00080005,                  # Specific Character Set: read, to decode the others' text
    0x00080050,                  # Accession Number
    0x00080051,                  # Issuer of Accession Number Sequence
    0x00081032,                  # Procedure Code Sequence
    0x00100020,                  # Patient ID
    0x00100021,                  # Issuer of Patient ID
    0x00100024,                  # Issuer of Patient ID Qualifiers Sequence
    0x00101002,                  # Other Patient IDs Sequence
    0x00321064,                  # Requested Procedure Code Sequence
    0x00400275,                  # Request Attributes Sequence
}


def _reconciled(tag: int) -> bool:
    return tag in RECONCILED or tag >> 16 == OUTSIDE_GROUP


Edit = tuple[list[tuple[int, bytes]], frozenset[int]]     # (elements written, original tags replaced)
# Past this tag nothing is reconciled (the outside marker's group 0009 comes before it): the rest
# of an instance is copied without being walked.
LAST_RECONCILED = max(RECONCILED)
EDITS_KEPT = 64        # distinct reconciled-element sets remembered (a study has one, or a few)


class Reconciler:
    """Reconciles Part-10 instances by ``recon``, each encoded as it came."""

    def __init__(self, recon: rules.Reconciliation):
        self.recon = recon
        self._edits: dict[tuple[bool, bytes], Edit] = {}

    def part10(self, data: bytes) -> EncodedInstance | None:
        """The reconciled instance; None when it is not one this can rewrite (deflated, big endian,
        no meta group length): then reconcile the decoded dataset."""
        found = part10.file_meta(data)
        if found is None:
            return None
        meta, start = found
        if not {0x00020002, 0x00020003, 0x00020010} <= meta.keys():
            return None
        implicit = part10.implicit_vr(meta[0x00020010])
        if implicit is None:
            return None
        spans, rest = [], len(data)          # the elements up to the last one reconcile may touch
        try:
            for tag, s, _, e in part10.top_level(data, start, implicit=implicit):
                if tag > LAST_RECONCILED:
                    rest = s
                    break
                spans.append((tag, s, e))
        except part10.Unreadable:
            return None
        touched = b"".join(data[s:e] for tag, s, e in spans if _reconciled(tag))
        edit = self._edits.get((implicit, touched))
        if edit is None:
            if len(self._edits) >= EDITS_KEPT:
                self._edits.clear()
            edit = self._edits[implicit, touched] = _edit(touched, implicit, self.recon)
        return EncodedInstance(_splice(data, start, spans, rest, *edit), meta[0x00020002], meta[0x00020003],
                               meta[0x00020010])


def _splice(data: bytes, start: int, spans: list[tuple[int, int, int]], rest: int,
            written: list[tuple[int, bytes]], replaced: frozenset[int]) -> bytes:
    """The dataset of ``data`` with the ``replaced`` elements cut out and the ``written`` ones put
    in at their place in tag order; untouched runs are copied whole, once (slices of a view)."""
    data = memoryview(data)
    chunks, copy_from, w = [], start, 0
    for tag, s, e in spans:
        before = w
        while w < len(written) and written[w][0] <= tag:
            w += 1
        if w > before or tag in replaced:
            chunks.append(data[copy_from:s])
            chunks.extend(piece for _, piece in written[before:w])
            copy_from = e if tag in replaced else s
    chunks.append(data[copy_from:rest])
    chunks.extend(piece for _, piece in written[w:])
    chunks.append(data[rest:])
    return b"".join(chunks)


def _edit(touched: bytes, implicit: bool, recon: rules.Reconciliation) -> Edit:
    """What reconciling these elements does: the elements it writes, encoded, and the tags of the
    original elements they replace or it deletes."""
    small = read_dataset(BytesIO(touched), implicit, True)
    originals = {tag: small.get_item(tag) for tag in small.keys()}
    small = rules.reconcile(small, recon)
    # Elements reconcile neither read nor wrote are still the raw ones: their bytes are kept.
    kept = {tag for tag in small.keys() if small.get_item(tag) is originals.get(tag)}
    changed = Dataset()
    for tag in small.keys():
        if tag not in kept:
            changed[tag] = small[tag]
    encoded = DicomBytesIO()
    encoded.is_implicit_VR, encoded.is_little_endian = implicit, True
    charset = small.get("SpecificCharacterSet")
    write_dataset(encoded, changed, convert_encodings(charset) if charset else "iso8859")
    new = encoded.getvalue()
    written = [(tag, new[s:e]) for tag, s, _, e in part10.top_level(new, 0, implicit=implicit)]
    return written, frozenset(originals.keys() - kept)
