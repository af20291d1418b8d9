"""Reading Native answers as the real clients do, for the query interface's tests.

``read_blocks`` frames blocks as clickhouse-go's ``Block.Decode`` does (lib/proto/block.go:
block info read as field, bool, field, int32, field when the revision is > 0; after each
column's type, a custom-serialization bool from revision 54454, which must be false) and reads
every column's data with clickhouse-connect's own column readers, so a wrong column boundary
shows up as a failed read or wrong values.
"""

from __future__ import annotations

from typing import Any

from clickhouse_connect.datatypes import registry
from clickhouse_connect.driverc.buffer import ResponseBuffer  # the C reader the client uses
from clickhouse_connect.driver.exceptions import StreamCompleteException
from clickhouse_connect.driver.query import QueryContext

CUSTOM_SERIALIZATION = 54454
OUT_OF_ORDER_BUCKETS = 54480


class _Source:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.exception_tag = None
        self.last_message = None

    @property
    def gen(self):
        yield self.data

    def close(self) -> None:
        pass


def read_blocks(data: bytes, revision: int) -> list[dict[str, Any]]:
    """``[{"names": [...], "types": [...], "columns": [[...], ...]}]``, one per block."""
    buf = ResponseBuffer(_Source(data))
    ctx = QueryContext()
    blocks = []
    while True:
        try:
            if 0 < revision < OUT_OF_ORDER_BUCKETS:  # clickhouse-go's fixed frame
                assert buf.read_leb128() == 1, "block info field 1"
                buf.read_byte()  # is_overflows
                assert buf.read_leb128() == 2, "block info field 2"
                buf.read_bytes(4)  # bucket_num
                assert buf.read_leb128() == 0, "block info end"
            elif revision:  # ClickHouse's BlockInfo::read: numbered fields up to field 0
                while (field := buf.read_leb128()) != 0:
                    if field == 1:
                        buf.read_byte()
                    elif field == 2:
                        buf.read_bytes(4)
                    else:
                        assert field == 3, f"block info field {field}"
                        buf.read_bytes(4 * buf.read_leb128())
            columns = buf.read_leb128()
        except StreamCompleteException:
            return blocks
        rows = buf.read_leb128()
        block: dict[str, Any] = {"names": [], "types": [], "columns": [], "rows": rows}
        for _ in range(columns):
            block["names"].append(buf.read_leb128_str())
            type_name = buf.read_leb128_str()
            block["types"].append(type_name)
            if revision >= CUSTOM_SERIALIZATION:
                assert buf.read_byte() == 0, "custom serialization"
            ch_type = registry.get_from_name(type_name)
            block["columns"].append(list(ch_type.read_column(buf, rows, ctx)) if rows else [])
        blocks.append(block)
