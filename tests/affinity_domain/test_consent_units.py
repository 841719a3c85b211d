"""The opt-out rule without I/O: who breaks the glass, and what an answer keeps of a result."""
from __future__ import annotations

from collections import namedtuple

from affinity_domain import consent
from affinity_domain.xua import ANONYMOUS, Code, Principal
from registry.stored_queries import Result, patients_of, without_patients

Row = namedtuple("Row", "id patient_id")
Link = namedtuple("Link", "id patient_id source target")


def test_break_glass_is_the_emergency_role_or_purpose_of_use():
    treating = Principal(subject="a", roles=(Code("309343006"),), purpose_of_use=(Code("TREATMENT"),),
                         assertion_id="_1")
    assert not consent.break_glass(None) and not consent.break_glass(ANONYMOUS)
    assert not consent.break_glass(treating)
    for glass in (Principal(subject="a", roles=(Code("emergency"),), assertion_id="_2"),
                  Principal(subject="a", purpose_of_use=(Code("EMERGENCY", "2.16.840.1.113883.3.18.7.1"),),
                            assertion_id="_3"),
                  Principal(subject="a", purpose_of_use=(Code("ETREAT", "2.16.840.1.113883.5.8"),), assertion_id="_4")):
        assert consent.break_glass(glass), glass


def test_an_answer_keeps_nothing_of_the_withheld_patients_but_the_rest():
    result = Result(documents=[Row("d1", "P1"), Row("d2", "P2")], submission_sets=[Row("s1", "P1")],
                    folders=[Row("f2", "P2")],
                    associations=[Link("a1", None, "s1", "d1"), Link("a2", None, "f2", "d2"),
                                  Link("a3", None, "d2", "d9")])
    assert patients_of(result) == {"P1", "P2"}
    kept = without_patients(result, {"P2"})
    assert [r.id for r in kept.all()] == ["s1", "d1", "a1"]


def test_the_human_requestor_of_a_principal():
    p = Principal(subject="dr@x", subject_name="Dr X", organization="H", roles=(Code("309343006", "2.16", "Phys"),),
                  purpose_of_use=(Code("TREATMENT", "2.16.840.1.113883.3.18.7.1", "Treatment"),), assertion_id="_1")
    human = consent.human(p)
    assert (human.user_id, human.name, human.organization) == ("dr@x", "Dr X", "H")
    assert [c.code for c in human.purposes] == ["TREATMENT"] and consent.human(ANONYMOUS) is None
