"""Benchmarks of xlocal against its peers: ``python -m benchmarks --help``.

Not part of the package: run from a checkout, see README-benchmarks.txt.
"""
