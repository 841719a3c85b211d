"""``ebrim.to_bytes`` writes what lxml writes for ``to_element``, byte for byte: the registry stores
objects with it, and queries return those bytes."""
from __future__ import annotations

import random

from lxml import etree

from affinity_domain import ebrim as rim
from tests import xds

# Characters that escape differently in text and in attributes, beyond ASCII, and an astral one.
ALPHABET = "aZ09 &<>\"'\t\n\r;^|é中\U0001F600-._:/"


def text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.choice((0, 1, 3, 12))))


def slots(rng: random.Random) -> list[rim.Slot]:
    return [rim.Slot(text(rng), [text(rng) for _ in range(rng.randrange(3))]) for _ in range(rng.randrange(3))]


def registry_object(rng: random.Random) -> rim.RegistryObject:
    kind = rng.choice(("document_entry", "submission_set", "folder", "association"))
    optional = lambda: rng.choice((None, "", text(rng)))  # noqa: E731
    return rim.RegistryObject(
        kind=kind, id=text(rng), lid=text(rng), object_type=text(rng), status=text(rng), home=text(rng),
        name=optional(), description=optional(), version_name=text(rng), slots=slots(rng),
        classifications=[rim.Classification(text(rng), text(rng), text(rng), text(rng), text(rng), text(rng),
                                            slots(rng)) for _ in range(rng.randrange(3))],
        external_identifiers=[rim.ExternalIdentifier(text(rng), text(rng), text(rng), text(rng), text(rng))
                              for _ in range(rng.randrange(3))],
        mime_type=text(rng), is_opaque=text(rng), association_type=text(rng), source=text(rng), target=text(rng))


def test_to_bytes_is_lxml_byte_for_byte_on_random_objects():
    rng = random.Random(20261201)
    for _ in range(3000):
        obj = registry_object(rng)
        assert rim.to_bytes(obj) == etree.tostring(rim.to_element(obj)), obj


def test_to_bytes_is_lxml_byte_for_byte_on_a_submission():
    docs = [xds.Doc(id=f"Document{n}", reference_ids=("A1^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession",))
            for n in range(3)]
    root = etree.fromstring(xds.submission(xds.new_patient(), docs, folders=["F1"]).encode())
    objects = rim.parse_object_list(next(root.iter(rim.q(rim.RIM, "RegistryObjectList"))))
    assert len(objects.objects) >= 8
    for obj in objects.objects:
        assert rim.to_bytes(obj) == etree.tostring(rim.to_element(obj))
