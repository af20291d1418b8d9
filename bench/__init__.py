"""Benchmarks of pbx-analytics: ``python -m bench run [part ...]`` (see docs/benchmarks.md).

Every figure is reported beside a baseline measured in the same run (these
machines are shared and noisy): the service against a bare app on the same
ASGI server, and against the naive one-INSERT-per-request design.
"""
