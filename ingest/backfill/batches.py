"""One access-log file -> its ``pbx.events`` rows as Arrow record batches, many lines at a time.

The rules are :class:`ingest.backfill.rows.LineDecoder`'s (and, through it, the
service's ``ingest.events.decode``); this module applies them to a chunk of
some 30,000 lines at once, column by column, with Arrow's C++ kernels (RE2
for the line pattern, splitting targets and queries, gathering parameters
into columns) and numpy. Python runs per *distinct* value, not per line --
request paths, dates with their offsets, parameter names, escaped values --
and there it calls the very functions the line-at-a-time rules use
(``LineDecoder.event``, ``parse_log_time``, ``percent_decode``), so each rule
keeps one home. Per line, Python only hashes the id (BLAKE2b has no engine
or Arrow kernel).

What the columns do not decode goes to ``LineDecoder``, line by line, in line
order (so its ``FILE:LINE`` reports come in order):

* a line that is not plain printable ASCII (RE2 and Python's ``re`` differ on
  Unicode whitespace and control characters; invalid UTF-8 is repaired as the
  text reader repairs it);
* a webhook whose parameters need more than the column rules: a parameter
  repeated with a different value (``name[2]`` in ``extra``), a missing or
  empty required parameter (a bad line, reported), more than ``200``
  parameters (bad).

So the rows are the rows ``LineDecoder`` gives line by line, which are the
rows the service stores for the same requests (``tests/unit/backfill`` and
``tests/e2e/backfill`` compare them, column by column, over simulated logs,
the vendor spec's URLs and generated lines).

The id needs each row's occurrence index: how many earlier rows of the file
had the same (time, target). Counted for a chunk's rows together, in line
order; a pair's count carries over to the next chunks while the pair is within
:data:`OCCURRENCE_WINDOW_MS` of the newest time read *or* was seen in the last
:data:`OCCURRENCE_WINDOW_LINES` lines (docs/import.md: "occurrence counting
looks back 5 minutes and 10,000 lines"). The line bound keeps one line with a
clock far ahead (``+0199``, a host's wrong date) from ending the counting of
the lines after it.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.backfill.accesslog import LINE, LineChunks, parse_log_time
from ingest.backfill.rows import Decoded, ImportStats, LineDecoder, Progress, line_seq, report_unparsed
from ingest.events.decode import percent_decode
from ingest.events.spec import EVENTS, PARAMS, required_params
from ingest.events.table import COLUMNS, Row, arrow_schema, to_row

__all__ = ["CHUNK_BYTES", "MAX_PARAMS", "OCCURRENCE_WINDOW_LINES", "OCCURRENCE_WINDOW_MS", "FileBatches",
           "read_batches", "rows_of"]

#: ``parse_query``'s limit (its default): a query with this many ``&`` is a bad line.
MAX_PARAMS = 200

#: How far back (by the newest time seen) a (time, target) pair's count is kept...
OCCURRENCE_WINDOW_MS = 300_000
#: ... and, whatever its time, how many lines back (identical lines are logged within
#: seconds of each other: a few lines apart, not 10,000).
OCCURRENCE_WINDOW_LINES = 10_000

#: Bytes of log text decoded at a time (~20,000 lines): large enough that the per-chunk
#: work (kernel calls, per-distinct-value Python) is small per line, small enough that
#: a chunk's arrays stay a few tens of MB.
CHUNK_BYTES = 4 << 20

_EVENT_NAMES: tuple[str, ...] = tuple(EVENTS)
_EVENT_CODE = {name: code for code, name in enumerate(_EVENT_NAMES)}
_PARAM_INDEX = {name: i for i, name in enumerate(PARAMS)}
#: Per event code: the parameters it declares (the rest go to ``extra``) and those it requires.
_FIELDS = [frozenset(f.name for f in msgspec.structs.fields(cls)) - {"extra"} for cls in EVENTS.values()]
#: Required parameter (its index in PARAMS) -> the codes of the events that require it.
_REQUIRING: dict[int, list[int]] = {}
for _code, _cls in enumerate(EVENTS.values()):
    for _param in required_params(_cls):
        _REQUIRING.setdefault(_PARAM_INDEX[_param], []).append(_code)

_ANCHORED_LINE = "^" + LINE.pattern

_SCHEMA = arrow_schema()
_EVENT_DICTIONARY = pa.array(_EVENT_NAMES, pa.string())
_SOURCE_DICTIONARY = pa.array(["import"], pa.string())
_EXTRA_TYPE = _SCHEMA.field("extra").type
_PARAMS_SLICE = slice(COLUMNS.index(PARAMS[0]), COLUMNS.index(PARAMS[-1]) + 1)  # in a row of COLUMNS
_EXTRA_INDEX = COLUMNS.index("extra")
_NO_MIDNIGHT = np.iinfo(np.int64).min

#: An empty BLAKE2b-128, copied for each id (cheaper than building one per line).
_BLAKE2B_16 = hashlib.blake2b(digest_size=16)


class _Rows:
    """Some rows of a chunk, column by column, before ids (numpy where numeric, else Arrow)."""

    __slots__ = ("event", "extra", "lineno", "ms", "params", "target")

    def __init__(self, lineno: np.ndarray, ms: np.ndarray, target: pa.Array, event: np.ndarray,
                 params: list[pa.Array], extra: pa.Array) -> None:
        self.lineno, self.ms, self.target, self.event, self.params, self.extra = (
            lineno, ms, target, event, params, extra)

    @classmethod
    def of(cls, decoded: list[Decoded]) -> _Rows:
        """Rows decoded line by line (``LineDecoder``), as columns."""
        rows = [to_row(d.event, d.decoded, d.epoch * 1000, "import", 0) for d in decoded]
        params = list(zip(*(row[_PARAMS_SLICE] for row in rows))) or [()] * len(PARAMS)
        return cls(
            np.array([d.lineno for d in decoded], np.int64),
            np.array([d.epoch * 1000 for d in decoded], np.int64),
            pa.array([d.target for d in decoded], pa.string()),
            np.array([_EVENT_CODE[d.event] for d in decoded], np.int8),
            [pa.array(column, pa.string()) for column in params],
            pa.array([list(row[_EXTRA_INDEX].items()) for row in rows], _EXTRA_TYPE),
        )

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        if len(parts) == 1:
            return parts[0]
        return _Rows(
            np.concatenate([p.lineno for p in parts]),
            np.concatenate([p.ms for p in parts]),
            pa.concat_arrays([p.target for p in parts]),
            np.concatenate([p.event for p in parts]),
            [pa.concat_arrays([p.params[i] for p in parts]) for i in range(len(PARAMS))],
            pa.concat_arrays([p.extra for p in parts]),
        )


class FileBatches:
    """The decoding state of one file: its line decoder, time cache and occurrence counts."""

    def __init__(self, name: str, stats: ImportStats, errors: IO[str] | None) -> None:
        self.stats = stats
        self.lines = LineDecoder(name, stats, errors)
        self._midnights: dict[str, int] = {}  # "02/Nov/2026 +0100" -> that local midnight, UTC epoch s
        self._seen = _Seen.empty()  # the (time, target) pairs still inside the window, with their counts
        self._newest = np.iinfo(np.int64).min  # the newest time read (ms)
        self._seq_zero: np.uint64 | None = None  # line 0's seq: line_seq(the first row's second, 0)

    def batch(self, first_lineno: int, chunk: bytes) -> pa.RecordBatch | None:
        """The rows of a chunk of whole lines (``LineChunks``), or None if it has none."""
        buf = np.frombuffer(chunk, np.uint8)
        ends = np.flatnonzero(buf == 10)
        count = len(ends)
        starts = np.empty(count + 1, np.int64)
        starts[0] = 0
        starts[1:] = ends + 1
        lines = pa.StringArray.from_buffers(count, pa.py_buffer(starts.astype(np.int32)), pa.py_buffer(chunk))
        by_line: list[tuple[int, Any]] = []  # (lineno, line text or (event, query, epoch, target)) for LineDecoder

        # Lines with a byte outside printable ASCII are read as text, one by one.
        odd = np.flatnonzero((buf.view(np.int8) < 32) | (buf == 127))
        plain = np.arange(count)
        if len(odd) > count:
            odd = np.unique(np.searchsorted(ends, odd[buf[odd] != 10]))
            keep = np.ones(count, bool)
            keep[odd] = False
            by_line += ((first_lineno + i, chunk[starts[i]:ends[i] + 1].decode("utf-8", "replace")) for i in odd)
            lines, plain = lines.filter(pa.array(keep)), plain[keep]

        rows = self._columns(chunk, buf, starts, ends, plain, lines, first_lineno, by_line)
        if by_line:
            by_line.sort(key=lambda item: item[0])
            decoded = [d for d in map(self._line, by_line) if d is not None]
            if decoded:
                rows = _Rows.concat([rows, _Rows.of(decoded)])
        return self._with_ids(rows) if len(rows.ms) else None

    def _line(self, item: tuple[int, Any]) -> Decoded | None:
        lineno, what = item
        if isinstance(what, str):
            return self.lines.line(what, lineno)
        event, query, epoch, target = what
        ev = self.lines.query(event, query, lineno)
        return None if ev is None else Decoded(lineno, epoch, target, event, ev)

    # ---- the columns -------------------------------------------------------------------

    def _columns(self, chunk: bytes, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, plain: np.ndarray,
                 lines: pa.StringArray, first_lineno: int, by_line: list[tuple[int, Any]]) -> _Rows:
        """The rows of the plain lines (indices ``plain``, text ``lines``); lines and webhooks the
        columns cannot decode are added to ``by_line``."""
        stats = self.stats
        # The line pattern decides which lines are log lines (RE2, no captures: its fast
        # path); on a matching line every field is at a place the pattern fixes:
        #   host ident user [dd/Mon/yyyy:hh:mm:ss +hhmm] "METHOD target ...
        # the 3rd space before "[", the 6th before the target, which runs to the next
        # space or the line's end.
        matched = pc.match_substring_regex(lines, _ANCHORED_LINE).to_numpy(zero_copy_only=False)
        stats.unparsed += len(matched) - int(matched.sum())
        line = plain[matched]
        spaces = np.flatnonzero(buf == 32)
        first_space = np.searchsorted(spaces, starts[line])
        s3 = spaces[first_space + 2]
        t0 = spaces[first_space + 5] + 1
        after = np.minimum(first_space + 6, len(spaces) - 1)
        t1 = np.where((first_space + 6 < len(spaces)) & (spaces[after] < ends[line]), spaces[after], ends[line])

        # An absolute-form target (a proxy's "http://host/path?query") is read as text.
        absolute = buf[t0] != 47  # "/"
        if absolute.any():
            by_line += ((first_lineno + i, chunk[starts[i]:ends[i] + 1].decode("ascii")) for i in line[absolute])
            origin = ~absolute
            line, s3, t0, t1 = line[origin], s3[origin], t0[origin], t1[origin]

        target = _gather(buf, t0, t1)
        pieces = pc.split_pattern(target, "?", max_splits=1)
        path, query = _split_in_two(pieces)
        paths = pc.dictionary_encode(path)
        code_of_path = np.array([_EVENT_CODE.get(self.lines.event(p), -1)  # type: ignore[arg-type]
                                 for p in paths.dictionary.to_pylist()], np.int8)
        event = code_of_path[paths.indices.to_numpy()] if len(code_of_path) else np.empty(0, np.int8)
        webhook = event >= 0
        stats.skipped += len(event) - int(webhook.sum())
        if not webhook.all():
            keep = pa.array(webhook)
            line, s3, event, target, query = line[webhook], s3[webhook], event[webhook], target.filter(keep), query.filter(keep)

        # The time: each distinct (date, offset) through parse_log_time; the time of day added.
        stamp = buf[s3[:, None] + np.arange(2, 28)].astype(np.int64) - 48  # "dd/Mon/yyyy:hh:mm:ss +hhmm" as digits
        day = stamp[:, 0] * 10 + stamp[:, 1]
        month = (stamp[:, 3] - 17) * 676 + (stamp[:, 4] - 49) * 26 + stamp[:, 5] - 49  # [A-Z][a-z][a-z]
        year = stamp[:, 7] * 1000 + stamp[:, 8] * 100 + stamp[:, 9] * 10 + stamp[:, 10]
        zone = (stamp[:, 21] == 43 - 48) * 10000 + stamp[:, 22] * 1000 + stamp[:, 23] * 100 + stamp[:, 24] * 10 + stamp[:, 25]
        _, first_of, day_of = np.unique(((year * 17576 + month) * 100 + day) * 20000 + zone, return_index=True,
                                        return_inverse=True)
        midnight = np.array([self._midnight(chunk[s3[i] + 2:s3[i] + 13].decode() + " " + chunk[s3[i] + 23:s3[i] + 28].decode())
                             for i in first_of], np.int64)[day_of.reshape(-1)]
        timed = midnight != _NO_MIDNIGHT
        stats.unparsed += len(timed) - int(timed.sum())
        seconds = ((stamp[:, 12] * 10 + stamp[:, 13]) * 3600 + (stamp[:, 15] * 10 + stamp[:, 16]) * 60
                   + stamp[:, 18] * 10 + stamp[:, 19])
        ms = (midnight + seconds) * 1000
        linenos = first_lineno + line
        if not timed.all():
            keep = pa.array(timed)
            target, query = target.filter(keep), query.filter(keep)
            linenos, event, ms = linenos[timed], event[timed], ms[timed]

        params, extra, regular = self._parameters(query, event)
        irregular = np.flatnonzero(~regular)
        if len(irregular):
            python_query, python_target = query.take(irregular).to_pylist(), target.take(irregular).to_pylist()
            by_line += ((int(linenos[i]), (_EVENT_NAMES[event[i]], q, int(ms[i]) // 1000, t))
                        for i, q, t in zip(irregular, python_query, python_target))
            keep = pa.array(regular)
            linenos, ms, event = linenos[regular], ms[regular], event[regular]
            target, extra = target.filter(keep), extra.filter(keep)
            params = [p.filter(keep) for p in params]
        return _Rows(linenos, ms, target, event, params, extra)

    def _midnight(self, day: str) -> int:
        """``02/Nov/2026 +0100`` -> that local midnight in UTC epoch seconds (cached), or _NO_MIDNIGHT."""
        midnight = self._midnights.get(day)
        if midnight is None:
            date, offset = day.split(" ")
            try:
                midnight = parse_log_time(f"{date}:00:00:00 {offset}")
            except ValueError:  # "31/Feb/2026": not a time
                midnight = _NO_MIDNIGHT
            if len(self._midnights) > 10_000:
                self._midnights.clear()
            self._midnights[day] = midnight
        return midnight

    def _parameters(self, query: pa.StringArray, event: np.ndarray) -> tuple[list[pa.Array], pa.Array, np.ndarray]:
        """The queries' parameters as :data:`PARAMS` columns and ``extra``, and which rows they are
        right for (the others need ``decode`` itself: repeats that differ, a missing required
        parameter, too many parameters)."""
        rows = len(query)
        fields = pc.split_pattern(pc.replace_substring(query, "+", " "), "&")
        regular = pc.list_value_length(fields).to_numpy() <= MAX_PARAMS  # fewer than MAX_PARAMS "&"
        parent = pc.list_parent_indices(fields).to_numpy()
        flat = pc.list_flatten(fields)
        nonempty = pc.binary_length(flat).to_numpy() > 0
        if not nonempty.all():
            flat, parent = flat.filter(pa.array(nonempty)), parent[nonempty]
        # name=value, split once; a field without "=" has the value "".
        names, values = _split_in_two(pc.split_pattern(flat, "=", max_splits=1))

        # Names: few distinct, decoded (percent_decode) and looked up per distinct name.
        encoded = pc.dictionary_encode(names)
        distinct: dict[str, int] = {}
        name_id = np.array([distinct.setdefault(percent_decode(n) if "%" in n else n, len(distinct))
                            for n in encoded.dictionary.to_pylist()], np.int64)
        name_id = name_id[encoded.indices.to_numpy()] if len(name_id) else np.empty(0, np.int64)
        decoded_names = list(distinct)
        column_of = np.full((len(_EVENT_NAMES), len(decoded_names) + 1), -1, np.int64)
        for code, fields_of in enumerate(_FIELDS):
            for i, name in enumerate(decoded_names):
                if name in fields_of:
                    column_of[code, i] = _PARAM_INDEX[name]

        # Values with an escape: decoded as percent_decode decodes them.
        escaped = pc.match_substring(values, "%").to_numpy(zero_copy_only=False)
        if escaped.any():
            values = pc.replace_with_mask(values, pa.array(escaped), _percent_decoded(values.filter(pa.array(escaped))))

        # A name repeated within a query: the first value stays; a different later value
        # means decode's "name[2]" in extra, left to decode.
        keep = self._first_of_repeats(parent, name_id, values, regular, len(decoded_names))
        if not keep.all():
            parent, name_id, values = parent[keep], name_id[keep], values.filter(pa.array(keep))
        column = column_of[event[parent], name_id]

        # Required parameters present and not empty, else decode reports the line.
        lengths = pc.binary_length(values).to_numpy()
        for param, codes in _REQUIRING.items():
            has = np.zeros(rows, bool)
            has[parent[(column == param) & (lengths > 0)]] = True
            regular &= has | ~np.isin(event, codes)

        # Known parameters into their columns ("" where absent): the values sorted by
        # column (rows stay in order within one), copied once; each column is a slice.
        known = column >= 0
        by_column = np.flatnonzero(known)
        by_column = by_column[np.argsort(column[by_column], kind="stable")]
        ordered = values.take(by_column)
        data = ordered.buffers()[2]
        value_offsets = np.frombuffer(ordered.buffers()[1], np.int32)[: len(ordered) + 1]
        bounds = np.searchsorted(column[by_column], np.arange(len(PARAMS) + 1))
        lengths = np.diff(value_offsets)
        params = []
        for i in range(len(PARAMS)):
            lo, hi = bounds[i], bounds[i + 1]
            offsets = np.zeros(rows + 1, np.int32)
            if hi > lo:
                sizes = np.zeros(rows, np.int32)
                sizes[parent[by_column[lo:hi]]] = lengths[lo:hi]
                np.cumsum(sizes, out=offsets[1:])
                start = int(value_offsets[lo])
                params.append(pa.StringArray.from_buffers(
                    rows, pa.py_buffer(offsets), data.slice(start, int(value_offsets[hi]) - start)))
            else:
                params.append(pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(b"")))
        unknown = np.flatnonzero(~known)
        if len(unknown):
            names_of = pa.array(decoded_names, pa.string())
            counts = np.bincount(parent[unknown], minlength=rows)
            extra_offsets = np.zeros(rows + 1, np.int32)
            np.cumsum(counts, out=extra_offsets[1:])
            extra = pa.MapArray.from_arrays(pa.array(extra_offsets), names_of.take(name_id[unknown]),
                                            values.take(unknown), type=_EXTRA_TYPE)
        else:
            extra = pa.MapArray.from_arrays(pa.array(np.zeros(rows + 1, np.int32)), pa.array([], pa.string()),
                                            pa.array([], pa.string()), type=_EXTRA_TYPE)
        return params, extra, regular

    @staticmethod
    def _first_of_repeats(parent: np.ndarray, name_id: np.ndarray, values: pa.Array, regular: np.ndarray,
                          names: int) -> np.ndarray:
        """Which fields to keep: all but later repeats of a name with the same value. A row with
        a repeat of a different value is marked irregular in ``regular``."""
        keep = np.ones(len(parent), bool)
        if not len(parent):
            return keep
        key = parent * (names + 1) + name_id
        order = np.argsort(key, kind="stable")  # a row's fields in order, grouped by name
        ordered = key[order]
        repeat = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
        if not len(repeat):
            return keep
        # The first field of each repeated name's group, for each repeat.
        group_start = np.maximum.accumulate(np.where(np.r_[True, ordered[1:] != ordered[:-1]],
                                                     np.arange(len(ordered)), 0))
        later, first = order[repeat], order[group_start[repeat]]
        same = pc.equal(values.take(later), values.take(first)).to_numpy(zero_copy_only=False)
        keep[later] = False
        regular[parent[later[~same]]] = False
        return keep

    # ---- ids ---------------------------------------------------------------------------

    def _with_ids(self, rows: _Rows) -> pa.RecordBatch:
        """The rows as a record batch of ``arrow_schema()``, each with its id."""
        ms = rows.ms
        key = pc.binary_join_element_wise(pc.cast(pa.array(ms), pa.string()), rows.target, "", "|")
        encoded = pc.dictionary_encode(key)
        code = encoded.indices.to_numpy()
        order = np.lexsort((rows.lineno, code))
        ordered = code[order]
        first = np.r_[True, ordered[1:] != ordered[:-1]]
        starts = np.flatnonzero(first)
        group_of = np.cumsum(first) - 1
        rank = np.arange(len(order)) - starts[group_of]
        counts = np.diff(np.r_[starts, len(order)])  # rows of each pair (code i: the i-th group)
        seen = self._seen
        at = seen.find(encoded.dictionary)  # each pair's place in `seen`, -1 if new
        earlier = at >= 0
        base = np.zeros(len(counts), np.int64)
        base[earlier] = seen.total[at[earlier]]
        occurrence = np.empty(len(order), np.int64)
        occurrence[order] = rank + base[ordered]

        # Carry the counts of the pairs still inside the window (by time or by lines).
        self._newest = max(self._newest, int(ms.max()))
        self._seen = seen.merged(at[earlier], encoded.dictionary, ms[order[starts]], base + counts,
                                 rows.lineno[order[starts + counts - 1]]).within(
            self._newest - OCCURRENCE_WINDOW_MS, int(rows.lineno.max()) - OCCURRENCE_WINDOW_LINES)

        # BLAKE2b of "<ms>|<target>|<occurrence>" (line_event_id), one line at a time: the
        # inputs as one bytes object, "\n" after each (no target holds one), split in C.
        hashed = pc.binary_join_element_wise(key, pc.cast(pa.array(occurrence), pa.string()), "\n", "")
        used = np.frombuffer(hashed.buffers()[1], np.int32)[[hashed.offset, hashed.offset + len(hashed)]]
        inputs = hashed.buffers()[2].slice(int(used[0]), int(used[1] - used[0])).to_pybytes().split(b"\n")
        inputs.pop()
        fresh = _BLAKE2B_16.copy
        digests = []
        for text in inputs:
            h = fresh()
            h.update(text)
            digests.append(h.digest())
        event_id = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(ms), [None, pa.py_buffer(b"".join(digests))])

        if self._seq_zero is None:
            self._seq_zero = np.uint64(line_seq(int(ms[np.argmin(rows.lineno)]) // 1000, 0))
        n = len(ms)
        columns = [
            event_id,
            pa.array(ms, pa.timestamp("ms", tz="UTC")),
            pa.DictionaryArray.from_arrays(pa.array(rows.event), _EVENT_DICTIONARY),
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), _SOURCE_DICTIONARY),
            *rows.params,
            rows.extra,
            pa.array(rows.lineno.astype(np.uint64) + self._seq_zero),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=_SCHEMA)


class _Seen(NamedTuple):
    """The (time, target) pairs a file's next chunks may meet again, as columns: ``key`` is
    ``"<ms>|<target>|"``, ``ms`` its time, ``total`` its rows so far, ``line`` its last line."""

    key: pa.StringArray
    ms: np.ndarray
    total: np.ndarray
    line: np.ndarray

    @classmethod
    def empty(cls) -> _Seen:
        return cls(pa.array([], pa.string()), *(np.empty(0, np.int64) for _ in range(3)))

    def find(self, keys: pa.StringArray) -> np.ndarray:
        """Each key's index here, -1 where absent (one hash lookup each, in C++)."""
        if not len(self.key):
            return np.full(len(keys), -1, np.int64)
        return pc.fill_null(pc.index_in(keys, value_set=self.key), -1).to_numpy().astype(np.int64)

    def merged(self, found: np.ndarray, key: pa.StringArray, ms: np.ndarray, total: np.ndarray,
               line: np.ndarray) -> _Seen:
        """These pairs updated by a chunk's (all of ``key``; ``found``: the indices here of
        those already seen)."""
        if not len(self.key):
            return _Seen(key, ms, total, line)
        old = np.ones(len(self.key), bool)
        old[found] = False
        mask = pa.array(old)
        return _Seen(pa.concat_arrays([self.key.filter(mask), key]), np.r_[self.ms[old], ms],
                     np.r_[self.total[old], total], np.r_[self.line[old], line])

    def within(self, after_ms: int, after_line: int) -> _Seen:
        """The pairs later than ``after_ms`` or last seen after line ``after_line``."""
        keep = (self.ms > after_ms) | (self.line > after_line)
        if keep.all():
            return self
        mask = pa.array(keep)
        return _Seen(self.key.filter(mask), self.ms[keep], self.total[keep], self.line[keep])


#: An escape whose byte is ASCII and not "%" itself.
_ASCII_ESCAPE = "%(?:[01][0-9A-Fa-f]|2[0-46-9A-Fa-f]|[3-7][0-9A-Fa-f])"


def _percent_decoded(values: pa.StringArray) -> pa.StringArray:
    """``percent_decode`` of each value (values holding "%").

    Where every "%" starts an escape of an ASCII byte other than "%" (a phone
    number's ``%2B``...), decoding is replacing each escape by its byte, the
    same for every value: done per distinct escape, with Arrow's
    ``replace_substring`` (no escape can form anew: no other "%" is left, and
    "%25" is excluded). Other values go through ``percent_decode`` itself, once
    per distinct value.
    """
    simple = pc.equal(pc.count_substring(values, "%"), pc.count_substring_regex(values, _ASCII_ESCAPE))
    simple = simple.to_numpy(zero_copy_only=False)
    decoded = values.filter(pa.array(simple))
    if len(decoded):
        data = np.frombuffer(decoded.buffers()[2], np.uint8)
        used = np.frombuffer(decoded.buffers()[1], np.int32)[[decoded.offset, decoded.offset + len(decoded)]]
        marks = np.flatnonzero(data[used[0]:used[1]] == 37) + used[0]
        codes = np.unique(data[marks + 1].astype(np.int64) * 256 + data[marks + 2])
        for code in codes.tolist():
            escape = "%" + chr(code >> 8) + chr(code & 255)
            decoded = pc.replace_substring(decoded, escape, chr(int(escape[1:], 16)))
    if simple.all():
        return decoded
    other = pa.array(~simple)
    distinct = pc.dictionary_encode(values.filter(other))
    text = pa.array([percent_decode(v) for v in distinct.dictionary.to_pylist()], pa.string())
    values = pc.replace_with_mask(values, other, text.take(distinct.indices))
    return pc.replace_with_mask(values, pa.array(simple), decoded) if len(decoded) else values


def _gather(source: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> pa.StringArray:
    """The byte ranges ``[starts, stops)`` of ``source`` (in order, not overlapping) as strings:
    one pass over ``source`` marking the ranges, one copy of the bytes they hold."""
    delta = np.zeros(len(source) + 1, np.int8)
    delta[starts] += 1
    delta[stops] -= 1
    inside = np.cumsum(delta[:-1], dtype=np.int8).view(bool)
    offsets = np.zeros(len(starts) + 1, np.int32)
    np.cumsum(stops - starts, out=offsets[1:])
    return pa.StringArray.from_buffers(len(starts), pa.py_buffer(offsets), pa.py_buffer(source[inside]))


def _split_in_two(pieces: pa.ListArray) -> tuple[pa.Array, pa.Array]:
    """Lists of one or two strings (``split_pattern(..., max_splits=1)``) -> (first, second or "")."""
    parts = pa.concat_arrays([pc.list_flatten(pieces), pa.array([""], pa.string())])
    first = pieces.offsets.to_numpy()[:-1]
    two = pc.list_value_length(pieces).to_numpy() == 2
    return parts.take(first), parts.take(np.where(two, first + 1, len(parts) - 1))


def read_batches(path: Path, stats: ImportStats, errors: IO[str] | None = None,
                 progress: Progress | None = None, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pa.RecordBatch]:
    """The ``pbx.events`` rows of one access-log file, as record batches of ``arrow_schema()``.

    Counts every line into ``stats``; bad webhook lines are reported to
    ``errors`` as ``FILE:LINE: message``. Raises ``LogFileError`` if the file
    cannot be opened; a read error midway (a truncated .gz) is reported and
    ends the file, keeping the rows read so far.
    """
    name = str(path)
    with LineChunks(path, chunk_bytes) as chunks:
        stats.files += 1
        unparsed_before = stats.unparsed
        decoder = FileBatches(name, stats, errors)
        counted = 0
        try:
            for first, chunk in chunks:
                batch = decoder.batch(first, chunk)
                stats.lines += chunks.lines - counted
                counted = chunks.lines
                if progress is not None:
                    progress.update(name, stats.lines, chunks.progress())
                if batch is not None:
                    yield batch
        except (OSError, EOFError, zlib.error) as exc:
            stats.file_errors += 1
            if errors is not None:
                errors.write(f"{name}: unreadable after line {chunks.lines}: {exc}; the lines before it "
                             "are imported\n")
        finally:
            stats.lines += chunks.lines - counted
        report_unparsed(name, chunks.lines, stats.unparsed - unparsed_before, stats, errors)


def rows_of(batch: pa.RecordBatch) -> list[Row]:
    """A batch's rows as :data:`~ingest.events.table.Row` tuples (ids as ints, times as epoch ms):
    for tools and tests that want the row form; the import itself never builds them."""
    columns = []
    for name in COLUMNS:
        column = batch.column(name)
        if name == "event_id":
            values = [int.from_bytes(v) for v in column.to_pylist()]
        elif name == "received_at":
            values = column.cast(pa.int64()).to_pylist()
        elif name == "extra":
            values = [dict(v) for v in column.to_pylist()]
        else:
            values = column.to_pylist()
        columns.append(values)
    return list(zip(*columns))
