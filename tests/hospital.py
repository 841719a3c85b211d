"""What hospitals send into the domain in the chain tests: ADT feeds, orders, CT studies by DCMTK
storescu; and how tests read the consumer's jobs."""
import json
import subprocess
import time
import urllib.request
import uuid

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.services import DCMTK_ENV, wait_until  # noqa: F401
from tests.xds import ack_code, mllp_send

HOSP_A, HOSP_B = "1.3.6.1.4.1.21367.2005.13.20.3000", "1.3.6.1.4.1.21367.2005.13.20.2000"


def adt(pid, oid, family="Nakamura", given="Hiro", dob="19650202", sex="M"):
    return (f"MSH|^~\\&|ADT|H|PIX|X|{time.strftime('%Y%m%d%H%M%S')}||ADT^A01^ADT_A01|{uuid.uuid4().hex[:10]}|P|2.3.1\r"
            f"EVN|A01\r"
            f"PID|||{pid}^^^&{oid}&ISO||{family}^{given}||{dob}|{sex}|||1 Bay St^^Toronto^ON^M5J2N8||4165550000\r"
            f"PV1||O\r").encode()


def order(pid, oid=HOSP_B):
    return (f"MSH|^~\\&|RIS|HOSPB|XDSI_CONSUMER|XDSI|{time.strftime('%Y%m%d%H%M%S')}||ORM^O01^ORM_O01|"
            f"{uuid.uuid4().hex[:10]}|P|2.3.1\rPID|||{pid}^^^&{oid}&ISO||Nakamura^Hiro\rORC|NW|O1\rOBR|1|O1\r").encode()


def send_study(chain, tmp_path, pid, oid, count=12, modality="CT", study_date="20260110", study=None):
    template = dcmread(get_testdata_file("CT_small.dcm"))
    study, series = study or generate_uid(), [generate_uid(), generate_uid()]
    files = []
    for i in range(count):
        ds = template.copy()
        ds.PatientID, ds.IssuerOfPatientID = pid, oid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series[i % 2]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.AccessionNumber, ds.Modality, ds.StudyDate = "ACC77", modality, study_date
        ds.SeriesNumber, ds.InstanceNumber = i % 2 + 1, i + 1
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    out = subprocess.run(["/usr/bin/storescu", "-aec", "XDSI_SOURCE", "127.0.0.1", str(chain.source_dicom_port),
                          *map(str, files)], env=DCMTK_ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return study


def published(chain, study_uid: str, timeout: float = 60) -> None:
    """Wait until the imaging source has published the study as it is now (its manifest is
    registered): the actors share the chain's database, each in its own schema."""
    import psycopg

    def done() -> bool:
        with psycopg.connect(chain.registry.database_url) as conn:
            row = conn.execute(
                "SELECT st.published_version = st.version AND EXISTS (SELECT 1 FROM imaging_source.manifest m "
                "WHERE m.study = st.id AND m.status = 'approved') FROM imaging_source.study st "
                "WHERE st.study_uid = %s", (study_uid,)).fetchone()
        return bool(row and row[0])
    wait_until(done, timeout)


def linked_patient(chain, count=12, **study):
    """A patient known at hospitals A and B (linked by PIX), with a study at hospital A."""
    a, b = f"A{uuid.uuid4().hex[:8]}", f"B{uuid.uuid4().hex[:8]}"
    family = "Nakamura" + uuid.uuid4().hex[:4]
    assert ack_code(mllp_send(chain.pix.mllp, adt(a, HOSP_A, family=family))) == "AA"
    assert ack_code(mllp_send(chain.pix.mllp, adt(b, HOSP_B, family=family))) == "AA"
    return a, b


def jobs(chain):
    return json.load(urllib.request.urlopen(f"{chain.consumer_http}/jobs"))


def stored_for(chain, b):
    return [j for j in jobs(chain) if j["local_patient"].startswith(b + "^")]
