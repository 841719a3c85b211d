"""Run every fuzz target in turn for a bounded time each (CI), or for a number of inputs each (the
long run): ``python -m fuzz.run_all -max_total_time=60`` or ``python -m fuzz.run_all -runs=1000000``.
Each target's final libFuzzer stats are printed; the exit status is non-zero if any target crashed."""
from __future__ import annotations

import subprocess
import sys

TARGETS = ["hl7", "mtom", "ebrim", "part10", "pdu"]


def main() -> int:
    flags = sys.argv[1:] or ["-max_total_time=60"]
    failed = []
    for name in TARGETS:
        print(f"== fuzz.{name} {' '.join(flags)}", flush=True)
        run = subprocess.run([sys.executable, "-m", f"fuzz.{name}", *flags], capture_output=True, text=True)
        stats = [line for line in run.stderr.splitlines() if line.startswith(("Done ", "stat::"))]
        print("\n".join(stats), flush=True)
        if run.returncode != 0:
            failed.append(name)
            print(run.stderr[-4000:], flush=True)
    if failed:
        print(f"== fuzz targets that crashed: {', '.join(failed)} (inputs under .fuzz/<target>/)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
