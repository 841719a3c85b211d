"""xdsi's tests: wire tests against real processes, in folders that mirror the packages."""
import os
from pathlib import Path

# Every process a test starts runs this checkout's code, whatever its working directory
# (a test may start `xdsi demo` elsewhere; an installed copy would otherwise be imported).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)
