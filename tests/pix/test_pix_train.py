"""``xdsi pix train`` estimates the linker's parameters from the stored index; a running manager
scores with them from then on."""
import json
import math
import random
import subprocess
import sys
import urllib.request

import psycopg

from pix_manager.linkage import DEFAULT_MODEL
from tests.pix.pixmsg import HOSP_A, HOSP_B, ack, adt, cx, new_id
from tests.services import start_pix

NAMES = ["Okafor", "Lindqvist", "Haddad", "Moreau", "Tanaka", "Kowalczyk", "Brennan", "Duarte"]
GIVEN = ["Ada", "Bruno", "Chloe", "Dmitri", "Elif", "Farah", "Goran", "Hana"]


def _explanation(pix, domain: str, pid: str) -> str:
    person = json.load(urllib.request.urlopen(f"{pix.http}/persons?domain={domain}&pid={pid}"))
    return next(i["link_explanation"] for i in person["identities"] if i["pid"] == pid)


def test_train_stores_parameters_the_running_manager_then_scores_with(new_database, tmp_path):
    database = new_database()
    pix = start_pix(database, tmp_path, registry_feed="", model_reload_seconds="0")
    rng = random.Random(4)
    try:
        for n in range(40):          # 40 people at both hospitals: 80 identities, 40 true pairs
            person = dict(family=rng.choice(NAMES) + str(n % 3 * "e"), given=rng.choice(GIVEN),
                          dob=f"19{rng.randint(30, 99)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                          sex=rng.choice("MF"), address=f"{n} Main St^^Springfield^^{rng.randint(10000, 99999)}")
            for hospital in (HOSP_A, HOSP_B):
                assert ack(pix, adt("A01", cx(new_id("T"), hospital), **person)) == "AA"
        done = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "pix", "train"], env=pix.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "trained on 80 identities" in done.stdout, done.stdout + done.stderr
        with psycopg.connect(database) as conn:
            stored = conn.execute("SELECT parameters, identities FROM pix.linkage_model").fetchone()
        assert stored[1] == 80 and stored[0]["prior"] != DEFAULT_MODEL.prior
        prior_bits = round(math.log2(stored[0]["prior"] / (1 - stored[0]["prior"])), 1)
        a, b = new_id("A"), new_id("B")
        same = dict(family="Zeller", given="Ines", dob="19610203", sex="F", address="7 Elm St^^Springfield^^55555")
        assert ack(pix, adt("A01", cx(a, HOSP_A), **same)) == "AA"
        assert ack(pix, adt("A01", cx(b, HOSP_B), **same)) == "AA"
        explanation = _explanation(pix, HOSP_B, b)
        assert f"prior {prior_bits:+.1f}" in explanation, explanation
    finally:
        pix.stop()


def test_train_on_too_few_identities_keeps_the_parameters_in_use(new_database, tmp_path):
    database = new_database()
    pix = start_pix(database, tmp_path, registry_feed="")
    try:
        assert ack(pix, adt("A01", cx(new_id("T"), HOSP_A), family="Solo", given="Sam", dob="19700101")) == "AA"
        done = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "pix", "train"], env=pix.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "too few" in done.stdout, done.stdout + done.stderr
        with psycopg.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM pix.linkage_model").fetchone()[0] == 0
    finally:
        pix.stop()
