"""Backfill: history from web-server access logs (``pbx-analytics import``).

``accesslog`` is the log format both ways (the simulator writes it, the
importer reads it); ``rows`` turns one file into ``pbx.events`` rows;
``importer`` inserts them, idempotently, with ``_parallel`` decoding several
files at once.
"""
