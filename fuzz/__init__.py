"""Fuzz targets for the parsers that read peer bytes: one module per target, each run as
``python -m fuzz.<target> [libFuzzer flags] [corpus dirs]`` (atheris, coverage-guided).

What counts as a crash, for every target: an exception other than the parser's documented error
types (each module's ``ALLOWED``), a broken property the module checks (an ACK that does not frame,
a spool file left behind, ...), an input that takes longer than ``-timeout`` seconds (10 by
default), or a process above ``-rss_limit_mb`` (1024 by default). libFuzzer then writes the input
under ``.fuzz/<target>/`` and exits non-zero.

The seed corpora are built at start from the project's test fixtures (nothing large is committed).
Without atheris (``pip install atheris``; Linux wheels), ``smoke`` runs a target on its seeds and a
few hundred seeded mutations of them: the pytest-collected check.
"""
