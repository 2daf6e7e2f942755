"""Benchmarks are run with ``python benchmarks/run.py``, never by pytest: collect nothing here."""

collect_ignore_glob = ["*.py"]
