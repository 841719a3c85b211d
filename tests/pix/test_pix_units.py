"""The PIX manager's pure parts: scorecard, blocking, matching decisions, ITI-9 answers, feed reading."""
import pytest

from affinity_domain.hl7 import Cx, Hl7Error
from pix_manager import blocking, messages, query
from pix_manager.demographics import normalise
from pix_manager.matching import Candidate, Thresholds, decide
from pix_manager.scorecard import compare
from tests.pix.pixmsg import HOSP_A, HOSP_B, adt, cx, qbp

KATE = normalise("Abernathy", "Katherine", "19720314", "F", "M5V 2T6", "Toronto", "12 Oak St", "416-555-0101")


def test_identical_records_score_every_attribute():
    s = compare(KATE, KATE)
    assert s.total == 28 + 16 + 24 + 6 + 10 + 4 + 6 + 10 and set(s.parts) >= {"family", "birth_date", "phone"}


def test_typos_nicknames_and_swapped_dates_earn_part_of_the_weight():
    other = normalise("Abernethy", "Kate", "19720315", "F", "M5V2T6", "Toronto", "12 Oak Street", "4165550101")
    s = compare(KATE, other)
    assert 0 < s.parts["family"] < 28 and 0 < s.parts["given"] < 16 and 0 < s.parts["birth_date"] < 24
    assert s.total > 70, s.explain()
    swapped = compare(normalise("Abernathy", "Katherine", "19720503"), normalise("Abernathy", "Katherine", "19720305"))
    assert 0 < swapped.parts["birth_date"] < 24


def test_an_impossible_date_is_missing_and_a_reduced_one_agrees_in_part():
    assert normalise("A", "B", "19721403").birth_date == ""          # month 14: a typo, taken as unknown
    assert "birth_date" not in compare(KATE, normalise("Abernathy", "Katherine", "19721403")).parts
    year = compare(KATE, normalise("Abernathy", "Katherine", "1972"))
    assert 0 < year.parts["birth_date"] < 24
    assert compare(KATE, normalise("Abernathy", "Katherine", "197104")).parts["birth_date"] < 0


def test_missing_values_are_neither_rewarded_nor_punished():
    bare = normalise("Abernathy", "Katherine", "19720314", "F")
    s = compare(KATE, bare)
    assert set(s.parts) == {"family", "given", "birth_date", "sex"} and s.total == 74


def test_disagreement_costs():
    other = normalise("Abernathy", "Katherine", "19810101", "M")
    s = compare(KATE, other)
    assert s.parts["birth_date"] < 0 and s.parts["sex"] < 0 and s.total < 63


def test_blocking_puts_swapped_day_and_month_together():
    a = normalise("Smith", "John", "19800304")
    b = normalise("Smith", "John", "19800403")
    assert set(blocking.keys(a)) & set(blocking.keys(b))


def _cand(identity, enterprise, domain, d):
    return Candidate(identity, enterprise, domain, d)


def test_decision_thresholds_and_remembered_decisions():
    bare = normalise("Abernathy", "Katherine", "19720315", "F")     # one digit off: 66.8
    candidates = [_cand(1, 10, HOSP_A, KATE)]
    assert decide(HOSP_B, KATE, candidates, {}).action == "link"
    assert decide(HOSP_B, bare, candidates, {}).action == "review"
    assert decide(HOSP_B, normalise("Other", "Person", "19990101"), candidates, {}).action == "new"
    assert decide(HOSP_B, KATE, candidates, {1: ("break", "dr")}).action == "new"
    linked = decide(HOSP_B, bare, candidates, {1: ("link", "dr")})
    assert (linked.action, linked.by) == ("link", "dr")
    # Same domain never auto-links; a person who already has a HOSP_B id goes to review.
    assert decide(HOSP_A, KATE, candidates, {}).action == "new"
    assert decide(HOSP_B, KATE, candidates, {}, occupied={10}).action == "review"
    assert decide(HOSP_B, KATE, candidates, {}, Thresholds(110, 120)).action == "new"


def test_pix_query_answers():
    q = query.read(qbp(cx("A1", HOSP_A), [HOSP_B]))
    known = {HOSP_A, HOSP_B}
    ok = query.answer(q, known, [Cx("A1", HOSP_A), Cx("B1", HOSP_B)]).decode()
    assert "MSA|AA" in ok and "QAK|" in ok and "|OK" in ok and "B1^^^&" + HOSP_B in ok
    nf = query.answer(query.read(qbp(cx("A1", HOSP_A), [HOSP_B])), known, [Cx("A1", HOSP_A)]).decode()
    assert "|NF" in nf and "\rPID|" not in nf
    unknown = query.answer(q, known, None).decode()
    assert "MSA|AE" in unknown and "ERR||QPD^1^3^1^1|204" in unknown


def test_feed_reading_fills_authority_from_facility_and_warns_of_bad_dates():
    m = messages.read_feed(adt("A01", "X1", facility="WARD"), {"WARD": "1.2.3"})
    assert m.ids == [Cx("X1", "1.2.3")] and m.demographics.family == "MOORE" and not m.warnings
    bad = messages.read_feed(adt("A01", cx("X1", HOSP_A), dob="19991399"), {})
    assert bad.demographics.birth_date == "" and [(w.code, w.location, w.severity) for w in bad.warnings] == \
        [("102", "PID^1^7", "W")]
    merge = messages.read_feed(adt("A40", cx("K", HOSP_A), mrg=cx("O", HOSP_A)), {})
    assert merge.subsumed == [Cx("O", HOSP_A)]


def test_weights_and_distance_functions_come_from_configuration():
    from pix_manager.scorecard import rules_from_config
    typo = normalise("Abernethy", "Katherine", "19720314", "F")
    default = compare(KATE, typo).parts["family"]
    exact = rules_from_config({"family": {"comparison": "exact"}})
    assert 0 < default < 28 and compare(KATE, typo, exact).parts["family"] == -10
    heavier = rules_from_config({"family": [40, 10]})
    assert compare(KATE, KATE, heavier).parts["family"] == 40
    without_phone = rules_from_config({"phone": [0, 0]})
    assert "phone" not in compare(KATE, KATE, without_phone).parts
    with pytest.raises(ValueError):
        rules_from_config({"family": {"comparison": "soundex"}})
    with pytest.raises(ValueError):
        rules_from_config({"shoe_size": [1, 1]})


def test_blocking_keys_are_checked_and_configurable():
    blocking.check(["phone", "family_phonetic+birth_year"])
    with pytest.raises(ValueError):
        blocking.check(["family+zip"])
    assert blocking.keys(KATE, ["phone"]) == ["phone:4165550101"]
    assert blocking.keys(normalise("A", "B"), ["phone"]) == []       # a missing value makes no key


def test_only_pix_queries_are_read_as_pix_queries():
    with pytest.raises(Hl7Error) as e:
        query.read(qbp(cx("A1", HOSP_A)).replace(b"QBP^Q23", b"QBP^Q22"))
    assert (e.value.ack, e.value.code) == ("AR", "201")


def test_names_too_far_apart_to_agree_and_too_close_to_differ_earn_nothing():
    far = compare(KATE, normalise("Arnett", "Katherine", "19720314", "F"))       # Jaro-Winkler 0.76
    assert far.parts["family"] == 0.0
    other = compare(KATE, normalise("Zhou", "Katherine", "19720314", "F"))
    assert other.parts["family"] == -10


def test_domains_are_configured_as_oids_or_whole_assigning_authorities():
    from affinity_domain.config import ConfigError, build_settings, load
    from pix_manager.settings import PixSettings
    s = build_settings(PixSettings, load(environ={"XDSI_PIX_DOMAINS": f'["HIMSS2005&{HOSP_A}&ISO", "{HOSP_B}"]'}))
    assert s.domains == (HOSP_A, HOSP_B)
    assert s.authorities.resolve(Cx("X", "", "HIMSS2005")) == Cx("X", HOSP_A, "HIMSS2005")
    assert str(s.authorities.cx("X", HOSP_B)) == f"X^^^&{HOSP_B}&ISO"
    for bad in ('["NS&1.2.3"]', '["NS&1.2.3&DNS"]', '["not an oid"]', '["A&1.2.3&ISO", "A&1.2.4&ISO"]'):
        with pytest.raises(ConfigError):
            build_settings(PixSettings, load(environ={"XDSI_PIX_DOMAINS": bad}))
