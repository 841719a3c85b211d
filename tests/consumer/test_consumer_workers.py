"""The consumer's job workers under supervision: alive in the run record, and a job given up
counted there (and on ``xdsi status``) as quarantined: kept, with its reason, until an order tries again."""
import json
import os
import subprocess
import sys

from tests.consumer.consumer_side import affinity_id, register, start_consumer
from tests.hospital import HOSP_B, linked_patient
from tests.services import wait_until


def test_a_job_given_up_is_counted_as_quarantined(chain, new_database, tmp_path, monkeypatch):
    monkeypatch.setenv("XDSI_WORKERS_CHECK_SECONDS", "0.2")

    def mktemp(name):
        (tmp_path / name).mkdir()
        return tmp_path / name
    c = start_consumer(chain, new_database(), mktemp, pacs=False)
    try:
        record = tmp_path / "consumer" / "run" / "consumer.json"
        jobs = wait_until(lambda: json.loads(record.read_text()).get("workers", {}).get("jobs"), 30)
        assert jobs["alive"] and jobs["quarantined"] == 0
        _, b = linked_patient(chain)
        register(chain, affinity_id(chain, b, HOSP_B), b"plain text, no manifest")
        status = c.finished(c.fetch(f"{b}^^^&{HOSP_B}&ISO"), 60)
        assert [job["state"] for job in status["jobs"]] == ["failed"]
        jobs = wait_until(lambda: (j := json.loads(record.read_text())["workers"]["jobs"])["quarantined"] == 1 and j,
                          30)
        assert jobs["alive"]
        env = dict(os.environ, XDSI_DATA_DIR=str(tmp_path / "consumer"))
        out = subprocess.run([sys.executable, "-m", "affinity_domain.cli", "status"], env=env, capture_output=True,
                             text=True, timeout=60)
        line = next(line for line in out.stdout.splitlines() if line.startswith("consumer"))
        assert "quarantined: jobs 1" in line, line
    finally:
        c.stop()

