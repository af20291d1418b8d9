"""pbx-analytics: PBX webhooks -> ClickHouse.

The package follows the data: ``spec`` (the webhooks as Structs) ->
``decode`` (parameters -> rows) -> ``app`` (HTTP) -> ``writer`` (batches ->
ClickHouse); ``db`` holds connections and migrations, ``cli`` the commands.
"""
