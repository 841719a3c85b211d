"""The outside-study marker, shared by the consumer (which writes it into every instance it
reconciles into a local PACS) and the imaging source (which never publishes a marked study):
a private block in group 0009, Private Creator ``XDSI RECONCILED``, element xx01 = the uid of the
source the study came from (LO)."""
from __future__ import annotations

from pydicom.dataset import Dataset

OUTSIDE_CREATOR = "XDSI RECONCILED"
OUTSIDE_GROUP = 0x0009


def mark_outside(ds: Dataset, source_uid: str) -> None:
    block = ds.private_block(OUTSIDE_GROUP, OUTSIDE_CREATOR, create=True)
    block.add_new(0x01, "LO", source_uid)


def outside_source(ds: Dataset) -> str | None:
    """The source uid of a marked instance ("" when the block has none), or None."""
    # Membership tests on the tag keys: images often carry other private blocks in group 0009
    # (GE does), and decoding each candidate creator costs more than the rest of intake.
    present = ds.keys()
    group = OUTSIDE_GROUP << 16
    for element in range(0x10, 0x100):
        if group | element in present and str(ds[group | element].value).strip() == OUTSIDE_CREATOR:
            uid = group | (element << 8) | 0x01
            return str(ds[uid].value) if uid in present else ""
    return None
