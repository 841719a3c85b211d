"""What some tests need from outside the project: the NIST XDS test kit (its test plans) and IHE's
schemas and WSDLs (for zeep). They sit beside the checkout (``../shared``) or wherever
$XDSI_SHARED says. Without them the tests that need them are skipped, and the run's summary says
so in one line (``tests/conftest.py``)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.services import ROOT

SHARED = Path(os.environ.get("XDSI_SHARED") or ROOT.parent / "shared")
KIT = SHARED / "nist-testkit"
IHE = SHARED / "ihe-iti-info"
SKIPPED = "needs the NIST XDS test kit or IHE's schemas and WSDLs"


def needs(*folders: Path) -> pytest.MarkDecorator:
    """Mark a test (or, as ``pytestmark``, a module) that cannot run without these folders."""
    return pytest.mark.skipif(not all(f.is_dir() for f in folders), reason=SKIPPED)


def skip_module_without(*folders: Path) -> None:
    """For a module whose test parameters are read from the kit itself."""
    if not all(f.is_dir() for f in folders):
        pytest.skip(SKIPPED, allow_module_level=True)


def summary(skipped: int) -> str:
    return (f"{skipped} skipped: they need the NIST XDS test kit or IHE's schemas and WSDLs, not found in "
            f"{SHARED}; set XDSI_SHARED to the folder that holds nist-testkit/ and ihe-iti-info/")
