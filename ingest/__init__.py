"""pbx-analytics: PBX webhooks -> ClickHouse -> call-centre analytics.

The packages follow the data. A webhook::

    receiving.server     uvicorn as serve runs it, with the front door's protocol
    receiving.protocol   connection limits (receiving.edge), HTTP parsing, the fast path for GETs
    receiving.app        the ASGI app: POSTs and the rest; Litestar for /healthz, /metrics, lifespan
    receiving.service    checks (client, size, token) -> decode -> row -> spool -> 200
    events.spec          the 17 webhooks as Structs (the vendor's spec in code)
    events.decode        request parameters -> one of those Structs
    events.table         the pbx.events row: columns, ids, arrival clock, spool record, the insert
    storing.spool        the durable write-ahead log a webhook is in before its 200
    storing.destination  the database a spool belongs to; where a spool lives by default
    storing.writer       spool -> pbx.events in batches, exactly once (via events.table)
    storing.clickhouse   the engine: embedded chDB or a ClickHouse server
    storing.migrations   sql/ applied once each (storing.cluster: the same on a cluster)

Queries come back out the same process (the embedded engine allows one)::

    querying             ClickHouse's HTTP interface on the engine serve holds (Grafana, SQL
                         clients): its own server and threads, read-only user, Native re-framed
    querying.client      the commands (sql, migrate, import) find that service and go through it

History and test data take two other ways in::

    backfill             access logs -> the same rows (accesslog: the format; importer)
    simulation           a seeded call centre -> webhooks, an access log, the expected figures

Around them: ``config`` (settings and command options, the environment read
once), ``cli`` (the commands; ``cli_remote``: which engine they run on), ``logs``,
``metrics``, and ``testing`` (the
harness the tests and ``bench/`` share).
"""
