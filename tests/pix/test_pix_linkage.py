"""The linker's parameters come from the data; relatives are never linked automatically."""
import random

from pix_manager import blocking
from pix_manager.demographics import Demographics, normalise
from pix_manager.linkage import Model, compare
from pix_manager.matching import Candidate, decide
from pix_manager.training import train
from tests.pix.pixmsg import HOSP_A, HOSP_B

FAMILIES = ["SMITH", "BROWN", "TREMBLAY", "GAGNON", "ROY", "WILSON", "MARTIN", "LEE", "PATEL", "NGUYEN",
            "KOWALSKI", "OKAFOR", "MURPHY", "ROSSI", "SCHMIDT", "COHEN", "SILVA", "KIM", "SINGH", "WONG"]
GIVEN = {"F": ["ANNA", "CLAIRE", "EMMA", "GRACE", "HANNAH", "JULIA", "LAURA", "NORA", "OLIVIA", "SOPHIE"],
         "M": ["ADAM", "BRUNO", "CARL", "DENIS", "ETHAN", "FELIX", "HUGO", "IVAN", "LEON", "OSCAR"]}
DATE_TYPO_RATE = 0.1


def _person(rng, family=None, sex=None, dob=None, address=None) -> dict:
    sex = sex or rng.choice("MF")
    street, postal, phone = address or (f"{rng.randint(1, 999)} {rng.choice(FAMILIES)} RD",
                                        f"H{rng.randint(1, 9)}X{rng.randint(1, 9)}Y{rng.randint(1, 9)}",
                                        f"514{rng.randint(1000000, 9999999)}")
    return dict(family=family or rng.choice(FAMILIES) + rng.choice(["", "", "E", "SON", "ER"]),
                given=rng.choice(GIVEN[sex]), sex=sex,
                birth_date=dob or f"{rng.randint(1930, 2015)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                street=street, postal_code=postal, city="MONTREAL", phone=phone)


def _other_hospital(p: dict, rng) -> dict:
    """Hospital B's registration: a date with one digit swapped now and then, address fields sometimes absent."""
    q = dict(p)
    if rng.random() < DATE_TYPO_RATE:
        d = q["birth_date"]
        q["birth_date"] = d[:6] + d[7] + d[6] if d[6] != d[7] and int(d[7] + d[6]) <= 28 else d[:7] + \
            str((int(d[7]) + 1) % 9 or 1)
    for k in ("street", "phone"):
        if rng.random() < 0.3:
            q[k] = ""
    return q


def _population(n: int, seed: int) -> tuple[list[Demographics], list[Demographics]]:
    rng = random.Random(seed)
    people = [_person(rng) for _ in range(n)]
    return [normalise(**p) for p in people], [normalise(**_other_hospital(p, rng)) for p in people[: n // 2]]


def test_parameters_are_estimated_from_the_index_not_set():
    a, b = _population(3000, 5)
    model = train(a + b)
    assert model.trained and model.m != Model().m
    # The share of true pairs whose date is a typo, as generated (the priors say 0.05).
    assert abs(model.m["birth_date"][1] - DATE_TYPO_RATE) < 0.04, model.m["birth_date"]
    assert abs(model.u["sex"][0] - 0.5) < 0.02
    # 1,500 true pairs among 4,500 identities.
    true_prior = 1500 / (4500 * 4499 / 2)
    assert true_prior / 2 < model.prior < true_prior * 2, model.prior
    # A rare name agreeing counts more than a common one.
    tf = model.tf["family"]
    common, rare = max(tf, key=tf.get), normalise("Zbigniewska", "Anna", "19700101")
    assert compare(rare, rare, model).parts["family"] > compare(
        normalise(common, "Anna", "19700101"), normalise(common, "Anna", "19700101"), model).parts["family"]


def _household(rng, kind: str) -> list[dict]:
    """People of one household sharing family name, address and phone: parents and children, twins
    (one birth date, two given names), or a Jr and Sr (one name, two birth dates)."""
    family = rng.choice(FAMILIES)
    home = (f"{rng.randint(1, 999)} {rng.choice(FAMILIES)} AVE", f"J{rng.randint(1, 9)}K{rng.randint(1, 9)}L1",
            f"438{rng.randint(1000000, 9999999)}")
    parents = [_person(rng, family, "M", address=home), _person(rng, family, "F", address=home)]
    if kind == "twins":
        sex = rng.choice("MF")
        first = _person(rng, family, sex, address=home)
        second = dict(first, given=rng.choice([g for g in GIVEN[sex] if g != first["given"]]))
        return parents + [first, second]
    if kind == "jr":
        junior = dict(parents[0], birth_date=f"{int(parents[0]['birth_date'][:4]) + 28}0615")
        return parents + [junior]
    return parents + [_person(rng, family, address=home) for _ in range(3)]


def test_relatives_sharing_name_address_and_phone_are_never_linked_automatically():
    rng = random.Random(17)
    households = [_household(rng, kind) for kind in ("family", "twins", "jr") for _ in range(40)]
    a, b = _population(8000, 9)
    relatives = [normalise(**p) for people in households for p in people]
    # The priors, then parameters trained on an index where 40 twins and 40 Jr/Sr pairs live among
    # 4,000 true pairs (at twice that share of relatives, EM counts Jr/Sr as matches whose date changed).
    for model in (None, train(a + b + relatives)):
        wrong = []
        for h, people in enumerate(households):
            for i, p in enumerate(people):
                # Hospital A knows every other member of the household, hospital B sees this one.
                index = [(j, normalise(**q)) for j, q in enumerate(people) if j != i]
                record = normalise(**p)
                candidates = [Candidate(j, j, HOSP_A, d) for j, d in index
                              if set(blocking.keys(d)) & set(blocking.keys(record))]
                verdict = decide(HOSP_B, record, candidates, {}, model=model)
                if verdict.action == "link":
                    wrong.append((record, people[verdict.enterprise], verdict.score.explain()))
        assert wrong == [], "\n".join(map(str, wrong[:3]))


def test_a_registration_with_its_relatives_in_the_index_links_to_the_person_not_the_relative():
    rng = random.Random(23)
    for kind in ("twins", "jr", "family"):
        for _ in range(20):
            people = _household(rng, kind)
            index = [Candidate(j, j, HOSP_A, normalise(**q)) for j, q in enumerate(people)]
            for i, p in enumerate(people):
                verdict = decide(HOSP_B, normalise(**_other_hospital(p, rng)), index, {})
                assert verdict.action != "link" or verdict.enterprise == i, (kind, verdict.score.explain())
