"""Benchmarks, each a module run from the repository root (`.venv/bin/python -m bench.handoff`); a package so the
scripts and the tests that reuse their setup (tests/cluster/test_operator_kwok.py) import `bench.common` by name
instead of putting this directory on sys.path."""
