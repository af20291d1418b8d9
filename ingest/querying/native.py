"""ClickHouse's Native format in the layout of the client's protocol revision.

A ClickHouse server writes Native for the ``client_protocol_version`` an HTTP client names
(``NativeWriter`` in ClickHouse's ``src/Formats/NativeWriter.cpp``). The embedded engine only
writes the revision-0 layout of a ``Native`` file. What differs, for the revisions we serve:

* revision > 0: every block starts with its block info (field 1 ``is_overflows`` UInt8,
  field 2 ``bucket_num`` Int32 = -1, from revision 54480 field 3 ``out_of_order_buckets``,
  an empty list here, then field 0);
* revision >= 54337: a top-level ``DateTime('zone')`` keeps its zone in the type name (the
  revision-0 writer prints a bare ``DateTime``);
* revision >= 54454: after each column's type, one byte says whether the column uses a custom
  serialization (sparse, ...). We always write dense columns, so it is always 0, which every
  reader of those revisions accepts (a server writes the same for any non-sparse column);
* 0 < revision < 54405: no LowCardinality on the wire (done by the engine itself, through
  ``low_cardinality_allow_in_native_format = 0``).

So the engine's own bytes are kept and only framed anew: the query runs with
``output_format_native_encode_types_in_binary_format = 1`` (the type of each column in the
documented binary type encoding, which keeps every time zone), each column's data is walked
only to find where it ends, and the type is written back as the name the engine itself gives
that binary type (``type_names``, asked once per distinct type). Values are never decoded.

Walking needs each type's bulk serialization, which this module knows for: every number,
date, time, decimal, enum, UUID, IP and ``Bool`` type, ``String``, ``FixedString``,
``Nullable``, ``Array``, ``Tuple``, ``Map``, ``Nested``, ``LowCardinality``, ``Variant``,
``Interval``, ``Nothing``, ``SimpleAggregateFunction`` and the geo types. ``Dynamic``, ``JSON``,
``AggregateFunction`` states, ``Object`` and anything newer are refused with
``UnsupportedType`` (the caller answers NOT_IMPLEMENTED and names a way around: another format,
or a cast). Revisions above ``MAX_REVISION`` are answered in ``MAX_REVISION``'s layout, as a
server of that revision would.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

__all__ = [
    "MAX_REVISION",
    "REVISION_LOW_CARDINALITY",
    "NativeError",
    "UnsupportedType",
    "block_info",
    "effective_revision",
    "transcode",
]

REVISION_TIME_ZONE_IN_DATETIME = 54337  # DBMS_MIN_REVISION_WITH_TIME_ZONE_PARAMETER_IN_DATETIME_DATA_TYPE
REVISION_LOW_CARDINALITY = 54405  # DBMS_MIN_REVISION_WITH_LOW_CARDINALITY_TYPE
REVISION_CUSTOM_SERIALIZATION = 54454  # DBMS_MIN_REVISION_WITH_CUSTOM_SERIALIZATION
REVISION_V2_DYNAMIC_AND_JSON = 54473  # DBMS_MIN_REVISION_WITH_V2_DYNAMIC_AND_JSON_SERIALIZATION
REVISION_OUT_OF_ORDER_BUCKETS = 54480  # DBMS_MIN_REVISION_WITH_OUT_OF_ORDER_BUCKETS_IN_AGGREGATION
#: The last revision whose layout we write: 54492 sends String columns with a separate
#: stream of offsets, which the engine does not write.
MAX_REVISION = 54491


class NativeError(ValueError):
    """The engine's Native bytes are not what this module expects (a bug, not the client's)."""


class UnsupportedType(NativeError):
    """A column type whose bulk layout this module does not walk."""

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name


def effective_revision(requested: int) -> int:
    """The layout written for a client that asked for ``requested``."""
    return min(requested, MAX_REVISION)


def block_info(revision: int) -> bytes:
    """The block-info header of a data block for ``revision`` (> 0)."""
    out_of_order = b"\x03\x00" if revision >= REVISION_OUT_OF_ORDER_BUCKETS else b""
    return b"\x01\x00\x02\xff\xff\xff\xff" + out_of_order + b"\x00"


def _varint(b: bytes, p: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = b[p]
        p += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, p
        shift += 7


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_U64 = struct.Struct("<Q")


# --- column layouts -------------------------------------------------------------------------
# Each layout knows where its state prefix and its data for ``rows`` rows end. Prefixes come
# first for the whole (nested) column, then the data (ISerialization::serializeBinaryBulk*).


class _Layout:
    def prefix(self, b: bytes, p: int) -> int:
        return p

    def data(self, b: bytes, p: int, rows: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class _Fixed(_Layout):
    def __init__(self, size: int) -> None:
        self.size = size

    def data(self, b: bytes, p: int, rows: int) -> int:
        return p + self.size * rows


class _String(_Layout):
    def data(self, b: bytes, p: int, rows: int) -> int:
        for _ in range(rows):
            n = b[p]
            if n < 0x80:
                p += 1 + n
            else:
                n, p = _varint(b, p)
                p += n
        return p


class _Nullable(_Layout):
    def __init__(self, inner: _Layout) -> None:
        self.inner = inner

    def prefix(self, b: bytes, p: int) -> int:
        return self.inner.prefix(b, p)

    def data(self, b: bytes, p: int, rows: int) -> int:
        return self.inner.data(b, p + rows, rows)  # null map: one byte per row


class _Array(_Layout):
    def __init__(self, inner: _Layout) -> None:
        self.inner = inner

    def prefix(self, b: bytes, p: int) -> int:
        return self.inner.prefix(b, p)

    def data(self, b: bytes, p: int, rows: int) -> int:
        if not rows:
            return p
        end = p + 8 * rows
        elements = _U64.unpack_from(b, end - 8)[0]  # offsets are cumulative: the last is the total
        return self.inner.data(b, end, elements)


class _Tuple(_Layout):
    def __init__(self, elements: list[_Layout]) -> None:
        self.elements = elements

    def prefix(self, b: bytes, p: int) -> int:
        for element in self.elements:
            p = element.prefix(b, p)
        return p

    def data(self, b: bytes, p: int, rows: int) -> int:
        for element in self.elements:
            p = element.data(b, p, rows)
        return p


class _LowCardinality(_Layout):
    """Prefix: key version 1 (shared dictionaries with additional keys). Data, per chunk of
    rows: UInt64 flags (index width in the low byte, bit 9 = keys follow), the keys as the
    dictionary type (the inner type without Nullable), UInt64 count and the indexes."""

    def __init__(self, dictionary: _Layout) -> None:
        self.dictionary = dictionary

    def prefix(self, b: bytes, p: int) -> int:
        version = _U64.unpack_from(b, p)[0]
        if version != 1:
            raise NativeError(f"LowCardinality key version {version}")
        return p + 8

    def data(self, b: bytes, p: int, rows: int) -> int:
        done = 0
        while done < rows:
            flags = _U64.unpack_from(b, p)[0]
            p += 8
            if flags & (1 << 8):
                raise NativeError("LowCardinality with a global dictionary")
            if flags & (1 << 9):
                keys = _U64.unpack_from(b, p)[0]
                p = self.dictionary.data(b, p + 8, keys)
            indexes = _U64.unpack_from(b, p)[0]
            p += 8 + indexes * (1 << (flags & 0xFF))
            done += indexes
        return p


class _Variant(_Layout):
    """Prefix: UInt64 discriminators mode (0 = one byte per row), then each variant's prefix.
    Data: the discriminators (255 = NULL), then each variant's own rows in type order."""

    def __init__(self, variants: list[_Layout]) -> None:
        self.variants = variants

    def prefix(self, b: bytes, p: int) -> int:
        mode = _U64.unpack_from(b, p)[0]
        if mode != 0:
            raise NativeError(f"Variant discriminators mode {mode}")
        p += 8
        for variant in self.variants:
            p = variant.prefix(b, p)
        return p

    def data(self, b: bytes, p: int, rows: int) -> int:
        discriminators = b[p : p + rows]
        p += rows
        for index, variant in enumerate(self.variants):
            p = variant.data(b, p, discriminators.count(index))
        return p


_POINT = _Tuple([_Fixed(8), _Fixed(8)])
_RING = _Array(_POINT)
_POLYGON = _Array(_RING)
#: Custom-named types (binary code 0x2C) and the layout of the type they are stored as.
_CUSTOM = {
    "Point": _POINT,
    "Ring": _RING,
    "LineString": _RING,
    "MultiLineString": _POLYGON,
    "Polygon": _POLYGON,
    "MultiPolygon": _Array(_POLYGON),
}

#: Binary type codes whose layout is a fixed number of bytes per row, after ``extra`` bytes
#: of type parameters (docs: data-types-binary-encoding).
_FIXED = {
    0x00: 1,  # Nothing: one placeholder byte per row
    0x01: 1, 0x02: 2, 0x03: 4, 0x04: 8, 0x05: 16, 0x06: 32,  # UInt8..UInt256
    0x07: 1, 0x08: 2, 0x09: 4, 0x0A: 8, 0x0B: 16, 0x0C: 32,  # Int8..Int256
    0x0D: 4, 0x0E: 8,  # Float32, Float64
    0x0F: 2, 0x10: 4, 0x11: 4,  # Date, Date32, DateTime
    0x1D: 16, 0x28: 4, 0x29: 16, 0x2D: 1,  # UUID, IPv4, IPv6, Bool
    0x31: 2, 0x32: 4,  # BFloat16, Time
}
_DECIMAL = {0x19: 4, 0x1A: 8, 0x1B: 16, 0x1C: 32}
_REFUSED = {
    0x21: "Set", 0x24: "Function", 0x25: "AggregateFunction", 0x2B: "Dynamic", 0x30: "JSON",
}


def _name(b: bytes, p: int) -> tuple[str, int]:
    n, p = _varint(b, p)
    return b[p : p + n].decode("utf-8", "replace"), p + n


def _skip_field(b: bytes, p: int) -> int:
    """Skip one aggregate-function parameter (the binary encoding of a Field)."""
    kind = b[p]
    p += 1
    if kind in (0x00, 0xFE, 0xFF):
        return p
    if kind in (0x01, 0x02):
        return _varint(b, p)[1]
    if kind in (0x03, 0x04, 0x05, 0x06, 0x11, 0x12):
        return p + 16
    if kind in (0x07,):
        return p + 8
    if kind in (0x08, 0x09, 0x0A, 0x0B):
        p = _varint(b, p)[1]
        return p + {0x08: 4, 0x09: 8, 0x0A: 16, 0x0B: 32}[kind]
    if kind == 0x0C:
        n, p = _varint(b, p)
        return p + n
    if kind in (0x0D, 0x0E):
        n, p = _varint(b, p)
        for _ in range(n):
            p = _skip_field(b, p)
        return p
    if kind == 0x0F:
        n, p = _varint(b, p)
        for _ in range(2 * n):
            p = _skip_field(b, p)
        return p
    if kind == 0x10:
        return p + 4
    if kind == 0x13:
        return p + 1
    raise UnsupportedType(f"an aggregate function parameter of kind 0x{kind:02x}")


def parse_type(b: bytes, p: int) -> tuple[_Layout, int]:
    """The layout of the binary-encoded type at ``p`` and where its encoding ends."""
    code = b[p]
    p += 1
    if code in _FIXED:
        return _Fixed(_FIXED[code]), p
    if code == 0x15:
        return _String(), p
    if code == 0x12:  # DateTime(zone)
        return _Fixed(4), _name(b, p)[1]
    if code == 0x13:  # DateTime64(P)
        return _Fixed(8), p + 1
    if code == 0x14:  # DateTime64(P, zone)
        return _Fixed(8), _name(b, p + 1)[1]
    if code == 0x34:  # Time64(P)
        return _Fixed(8), p + 1
    if code == 0x16:  # FixedString(N)
        n, p = _varint(b, p)
        return _Fixed(n), p
    if code in (0x17, 0x18):  # Enum8, Enum16: (name, value) pairs
        n, p = _varint(b, p)
        width = 1 if code == 0x17 else 2
        for _ in range(n):
            p = _name(b, p)[1] + width
        return _Fixed(width), p
    if code in _DECIMAL:
        return _Fixed(_DECIMAL[code]), p + 2
    if code == 0x22:  # Interval(kind): Int64
        return _Fixed(8), p + 1
    if code == 0x1E:
        inner, p = parse_type(b, p)
        return _Array(inner), p
    if code == 0x23:
        inner, p = parse_type(b, p)
        return _Nullable(inner), p
    if code == 0x26:
        inner, p = parse_type(b, p)
        # The dictionary holds the inner type without Nullable (NULL is a reserved key).
        return _LowCardinality(inner.inner if isinstance(inner, _Nullable) else inner), p
    if code == 0x27:
        key, p = parse_type(b, p)
        value, p = parse_type(b, p)
        return _Array(_Tuple([key, value])), p
    if code in (0x1F, 0x20, 0x2F):  # Tuple, named Tuple, Nested
        n, p = _varint(b, p)
        elements = []
        for _ in range(n):
            if code != 0x1F:
                p = _name(b, p)[1]
            element, p = parse_type(b, p)
            elements.append(element)
        return (_Array(_Tuple(elements)) if code == 0x2F else _Tuple(elements)), p
    if code == 0x2A:
        n, p = _varint(b, p)
        variants = []
        for _ in range(n):
            variant, p = parse_type(b, p)
            variants.append(variant)
        return _Variant(variants), p
    if code == 0x2C:
        custom, p = _name(b, p)
        if custom not in _CUSTOM:
            raise UnsupportedType(custom)
        return _CUSTOM[custom], p
    if code == 0x2E:  # SimpleAggregateFunction(f(params), T): stored as T
        p = _name(b, p)[1]
        n, p = _varint(b, p)
        for _ in range(n):
            p = _skip_field(b, p)
        n, p = _varint(b, p)
        if n != 1:
            raise UnsupportedType("SimpleAggregateFunction of several arguments")
        return parse_type(b, p)
    raise UnsupportedType(_REFUSED.get(code, f"the type with binary code 0x{code:02x}"))


TypeNames = Callable[[bytes], str]


def transcode(chunk: bytes, revision: int, type_names: TypeNames) -> Iterator[bytes]:
    """The blocks of ``chunk`` (engine Native, binary-encoded types) in ``revision``'s layout.

    ``type_names`` maps a binary type encoding to the engine's own name for that type.
    """
    info = block_info(revision)
    custom_byte = b"\x00" if revision >= REVISION_CUSTOM_SERIALIZATION else b""
    b = bytes(chunk)
    p = 0
    while p < len(b):
        start = p
        columns, p = _varint(b, p)
        rows, p = _varint(b, p)
        out = [info, b[start:p]]
        for _ in range(columns):
            name_start = p
            p = _name(b, p)[1]
            out.append(b[name_start:p])
            type_start = p
            layout, p = parse_type(b, p)
            type_name = type_names(b[type_start:p])
            if revision < REVISION_TIME_ZONE_IN_DATETIME and type_name.startswith("DateTime("):
                type_name = "DateTime"
            encoded = type_name.encode()
            out += [_put_varint(len(encoded)), encoded, custom_byte]
            if rows:
                data_start = p
                p = layout.data(b, layout.prefix(b, p), rows)
                if p > len(b):
                    raise NativeError("column data runs past the end of the block")
                out.append(b[data_start:p])
        yield b"".join(out)
