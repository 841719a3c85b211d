"""Reconcile a Part-10 instance by re-encoding only the elements reconciliation touches.

pydicom decodes and encodes a few microseconds' worth per element: for a CT of 280 elements,
decoding, reconciling and encoding the whole instance for C-STORE was most of the consumer's time
per instance, although reconciliation changes a handful of top-level elements. Here the instance
is walked once for its top-level element boundaries; the elements ``rules.reconcile`` reads or
writes are decoded into a small dataset and reconciled by that same function; the result is the
original bytes with just those elements replaced: the bytes pydicom would have written for the
whole reconciled dataset (the tests compare the two).
"""
from __future__ import annotations

from io import BytesIO

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

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


def _dataset_start(data: bytes) -> int | None:
    """Offset of the dataset after the preamble and the File Meta Information, whose first
    element, its group length, PS3.10 requires."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00" or data[136:138] != b"UL":
        return None
    return 144 + int.from_bytes(data[140:144], "little")


def _spans(data: bytes, start: int, implicit: bool):
    """(tag, start, end, element) of each top-level (little endian) element from ``start`` on."""
    fp = BytesIO(data)
    fp.seek(start)
    for element in data_element_generator(fp, implicit, True):
        end = fp.tell()
        yield int(element.tag), start, end, element     # plain ints: BaseTag compares in Python
        start = end


def reconcile_part10(data: bytes, recon: rules.Reconciliation) -> EncodedInstance | None:
    """The reconciled instance, encoded as it came; None when it is not one this can rewrite
    (deflated, big endian, no meta group length): then reconcile the decoded dataset."""
    start = _dataset_start(data)
    if start is None:
        return None
    meta = Dataset()
    for tag, _, _, element in _spans(data[:start], 132, False):
        meta[tag] = element
    syntax = UID(str(meta.get("TransferSyntaxUID", "")))
    if not syntax or syntax.is_deflated or not syntax.is_little_endian:
        return None
    implicit = syntax.is_implicit_VR
    spans = list(_spans(data, start, implicit))
    small, originals = Dataset(), {}
    for tag, _, _, element in spans:
        if tag in RECONCILED or tag >> 16 == OUTSIDE_GROUP:
            small[tag] = originals[tag] = element
    small = rules.reconcile(small, recon)
    changed = Dataset()
    for tag in small.keys():
        if small.get_item(tag) is not originals.get(tag):   # read or written: encode it anew
            changed[tag] = small[tag]
    encoded = DicomBytesIO()
    encoded.is_implicit_VR, encoded.is_little_endian = implicit, True
    charset = small.get("SpecificCharacterSet")
    write_dataset(encoded, changed, convert_encodings(charset) if charset else "iso8859")
    new = encoded.getvalue()
    pieces = [(tag, new[s:e]) for tag, s, e, _ in _spans(new, 0, implicit)]
    pieces += [(tag, data[s:e]) for tag, s, e, _ in spans
               if tag not in originals or small.get_item(tag) is originals[tag]]
    pieces.sort(key=lambda piece: piece[0])
    return EncodedInstance(b"".join(piece for _, piece in pieces), str(meta.MediaStorageSOPClassUID),
                           str(meta.MediaStorageSOPInstanceUID), str(syntax))
