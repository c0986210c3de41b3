"""Benchmarks (not timed tests): `python -m golf.bench NAME`, one module per NAME in this folder.

Each module has `main(argv)`; each prints figures measured in one run, ratios where it compares.
"""
