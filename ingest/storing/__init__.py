"""Storing: from an acknowledged webhook to a row in ClickHouse.

``spool`` is the durable write-ahead log a webhook is in before its 200
(``_spool_files`` its on-disk format); ``writer`` drains it into
``pbx.events`` in batches, exactly once; ``clickhouse`` opens the engine
(embedded or a server); ``migrations`` applies ``sql/`` and ``cluster`` maps
it onto a ClickHouse cluster. ``views`` holds the pairing rules of the
per-call and per-agent views as templates, rendered into
``sql/0217_create_layer_views.sql``.
"""
