"""What every fuzz target shares: instrumenting the code under test, the seed corpus on disk,
libFuzzer's default bounds, and the atheris-free smoke run."""
from __future__ import annotations

import contextlib
import logging
import random
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterable

try:
    import atheris
except ImportError:          # the smoke run needs no atheris
    atheris = None

DEFAULTS = {"-timeout": "10", "-rss_limit_mb": "1024", "-print_final_stats": "1"}


def instrumented(*packages: str):
    """Import the code under test inside this block so that atheris sees its branches (only when a
    target runs as the fuzzer: a test importing it gets the code as it is)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if atheris is None or not (spec and spec.name.startswith("fuzz.")):
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=list(packages))


def main(name: str, test_one_input: Callable[[bytes], None], seeds: Callable[[], Iterable[bytes]],
         max_len: int = 65536) -> None:
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris")
    warnings.simplefilter("ignore")        # pydicom warns (and logs) on every odd value it meets
    logging.disable(logging.CRITICAL)
    argv = list(sys.argv)
    given = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("-")}
    artifacts = Path(".fuzz") / name
    artifacts.mkdir(parents=True, exist_ok=True)
    defaults = {**DEFAULTS, "-max_len": str(max_len), "-artifact_prefix": f"{artifacts}/"}
    argv += [f"{k}={v}" for k, v in defaults.items() if k not in given]
    corpus = tempfile.mkdtemp(prefix=f"xdsi-fuzz-{name}-")
    for i, seed in enumerate(seeds()):
        Path(corpus, f"seed{i:03d}").write_bytes(seed[:max_len])
    # libFuzzer adds what it finds to its first corpus dir: the caller's own, when given.
    argv.append(corpus)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


def mutations(seeds: list[bytes], count: int, rng: random.Random) -> Iterable[bytes]:
    """Cheap structure-blind mutations: flips, inserts, cuts, duplications and splices of the seeds."""
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op, at = rng.randrange(6), rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif op == 2:
                del data[at:at + rng.randint(1, 64)]
            elif op == 3:
                data = data[:at]
            elif op == 4:
                data[at:at] = data[at:at + rng.randint(1, 256)] * rng.randint(1, 8)
            else:
                other = rng.choice(seeds)
                data = data[:at] + other[rng.randrange(len(other) + 1):]
        yield bytes(data)


def smoke(test_one_input: Callable[[bytes], None], seeds: Iterable[bytes], count: int = 300,
          seed: int = 0) -> int:
    """Run the target on every seed and ``count`` mutations of them; return the number of inputs."""
    seeds = list(seeds)
    n = 0
    for data in seeds + list(mutations(seeds, count, random.Random(seed))):
        test_one_input(data)
        n += 1
    return n
