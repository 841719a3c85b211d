"""xdsi's tests: wire tests against real processes, in folders that mirror the packages."""
import os
from pathlib import Path

from tests.entry_points import use_checkout_entry_points

# Every process a test starts runs this checkout's code, whatever its working directory
# (a test may start `xdsi demo` elsewhere; an installed copy would otherwise be imported).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)
# ... and finds this checkout's actors, should the installed package's metadata be older.
use_checkout_entry_points(Path(__file__).resolve().parents[1])
