"""LLaVA annotation files -> columnar sample chunks, streamed with bounded memory.

The format (LCS-558K `blip_laion_cc_sbu_558k.json`, the 665K mix `llava_v1_5_mix665k.json`): a JSON list
of samples `{"id": str|int, "image": "relative/path.jpg" (absent: text-only), "conversations":
[{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}`. JSON Lines (one
sample per line) is read too.

Reading never fails on one bad sample:
  * the file is read as bytes, and a sample's text is decoded as UTF-8 with errors="surrogateescape", so a
    byte that is not UTF-8 becomes a lone surrogate inside that sample only; the sample is flagged
    `non_utf8` (as is a JSON `\\udXXX` escape that leaves a lone surrogate) and its strings are cleaned
    (U+FFFD) for Arrow;
  * a sample with the wrong shape (not an object, no id, conversations not a list of {from, value}
    objects with string values, odd number of turns ...) is kept with a `problem` code instead of raising;
    a turn's `from` is compared with the human/gpt alternation right away (`roles_ok`).
Only a file that is not JSON at all raises `AnnotationFormatError`, naming the file, line, column and byte.

Memory stays bounded: the file is read in `read_bytes` pieces and parsed one sample at a time with the
C scanner of the standard `json` module (see "Streaming JSON" below); samples leave as `SampleChunk`s
(Arrow string arrays for the turns, numpy arrays for the rest) of `chunk_rows` rows (fewer once
`chunk_bytes` source bytes are reached). Each sample keeps its byte span in the file, so its exact source
text can be read back later (`read_spans`).
"""

from __future__ import annotations

import json
import operator
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

ROLES = ("human", "gpt")  # turn i must be ROLES[i % 2]
TURN_TYPE = pa.struct([("from", pa.string()), ("value", pa.string())])
CONVERSATIONS_TYPE = pa.list_(TURN_TYPE)

DEFAULT_READ_BYTES = 8 << 20
DEFAULT_CHUNK_ROWS = 32768
DEFAULT_CHUNK_BYTES = 64 << 20

# Structural problems (reason `malformed`); the text is the human-readable detail.
PROBLEMS = {
    "not_an_object": "the sample is not a JSON object",
    "missing_id": "no `id`",
    "bad_id": "`id` is not a non-empty string or an integer",
    "bad_image": "`image` is not a string (multi-image samples are not supported)",
    "missing_conversations": "no `conversations`",
    "conversations_not_a_list": "`conversations` is not a list",
    "bad_turn_count": "`conversations` needs an even number (>= 2) of turns",
    "turn_not_an_object": "a turn is not an object with `from` and `value`",
    "turn_not_a_string": "a turn's `value` is not a string",
}

_WS = re.compile(r"[ \t\n\r]*").match
_AFTER_ELEMENT = re.compile(r"[ \t\n\r]*([,\]])?[ \t\n\r]*").match  # whitespace, then ',' or ']'
_INVALID_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8
_SURROGATE = re.compile("[\ud800-\udfff]")
_BOM = "\xef\xbb\xbf"  # the UTF-8 byte order mark, as latin-1 text
_MISSING = object()
# A failed parse this close to the end of the text read so far may just be a value cut by the read size.
_TAIL = 16
_REFILL = 1 << 18  # read on before parsing a value that starts this close to the end of the text read


class AnnotationFormatError(ValueError):
    """The file as a whole cannot be read as LLaVA annotations (not JSON, not a list of samples)."""


# ---------------------------------------------------------------------------------------------------
# Streaming JSON: one top-level value at a time, with its byte span
#
# The bytes are decoded as latin-1: one character per byte, so character offsets are byte offsets and
# decoding is a copy. JSON's structure is ASCII, so the scanner parses that text correctly; only strings
# holding non-ASCII bytes come out wrong, and a sample whose span is not ASCII (a few percent of them) is
# decoded again as UTF-8 (errors="surrogateescape") and parsed again.


class _TextStream:
    """The file as latin-1 text, read in pieces; `buf[pos:]` is what has not been consumed yet."""

    def __init__(self, fh, path: str, read_bytes: int):
        self.fh, self.path, self.read_bytes = fh, path, read_bytes
        self.buf, self.pos, self.eof = "", 0, False
        self.base = 0  # absolute byte offset of buf[0]

    def fill(self) -> bool:
        """Drop the consumed text, append the next piece; False (and eof) when the file is exhausted."""
        if self.eof:
            return False
        data = self.fh.read(self.read_bytes)
        self.eof = not data
        self.base += self.pos
        self.buf, self.pos = self.buf[self.pos:] + data.decode("latin-1"), 0
        return True

    def skip_ws(self) -> bool:
        """Skip JSON whitespace (reading on as needed); False at the end of the file."""
        while True:
            self.pos = _WS(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return True
            if not self.fill():
                return False

    def error(self, message: str, at: int | None = None) -> AnnotationFormatError:
        byte = self.base + (self.pos if at is None else at)
        line, column = _line_column(self.fh, byte)
        return AnnotationFormatError(
            f"{self.path}: not valid JSON: {message} at line {line}, column {column} (byte {byte})"
        )


JsonBatch = tuple  # (byte_start, byte_len, invalid): parallel lists, one entry per top-level value


def _line_column(fh, byte: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte offset; reads the file up to it again."""
    fh.seek(0)
    lines, tail, left = 0, b"", byte
    while left > 0:
        data = fh.read(min(left, 1 << 24))
        if not data:
            break
        left -= len(data)
        lines += data.count(b"\n")
        tail = (tail + data)[-(1 << 20):]
    last = tail.rsplit(b"\n", 1)[-1]
    return lines + 1, len(last.decode("utf-8", "surrogateescape")) + 1


def _utf8_value(scan, span: str) -> tuple[object, bool]:
    """Parse one sample's latin-1 text again as UTF-8; also say whether it held bytes that are not UTF-8."""
    text = span.encode("latin-1").decode("utf-8", "surrogateescape")
    return scan(text, 0)[0], bool(_INVALID_BYTE.search(text))


def iter_json_batches(path: str | os.PathLike, sink: Callable[[object], None],
                      read_bytes: int = DEFAULT_READ_BYTES, room: list[int] | None = None) -> Iterator[JsonBatch]:
    """Stream the top-level samples of a file: each parsed value goes to `sink` at once (so the parsed
    objects die young: holding millions of dicts costs more than parsing them), and once per piece read
    a batch `(byte_start, byte_len, invalid)` describes the values sunk since the previous one.

    The file is a JSON array (each element is a sample) or JSON Lines / concatenated values. `invalid[i]`:
    the sample's bytes were not all UTF-8 (they became lone surrogates in the parsed strings). `room`: a
    one-element list the caller may update between batches; a batch ends once it holds room[0] values.
    Raises AnnotationFormatError, naming the file, line, column and byte, if the text is not JSON.
    """
    path = os.fspath(path)
    room = room if room is not None else [1 << 62]
    scan = json.JSONDecoder().scan_once  # the C scanner; strict JSON (no raw control characters)
    with open(path, "rb") as fh:
        stream = _TextStream(fh, path, read_bytes)
        if not stream.skip_ws():
            raise AnnotationFormatError(f"{path}: empty file (expected a JSON list of samples)")
        if stream.buf.startswith(_BOM, stream.pos):
            stream.pos += len(_BOM)
            if not stream.skip_ws():
                raise AnnotationFormatError(f"{path}: empty file (expected a JSON list of samples)")
        first = stream.buf[stream.pos]
        if first == "[":
            stream.pos += 1
            if not stream.skip_ws():
                raise stream.error("unterminated list")
            if stream.buf[stream.pos] == "]":
                stream.pos += 1
            else:
                yield from _batches(stream, scan, sink, room, array=True)
            if stream.skip_ws():
                raise stream.error("extra data after the list of samples")
        elif first == "{":
            yield from _batches(stream, scan, sink, room, array=False)
        else:
            raise stream.error("expected a JSON list of samples ('[') or JSON Lines ('{')")


def iter_json_values(path: str | os.PathLike, read_bytes: int = DEFAULT_READ_BYTES) -> Iterator[tuple]:
    """`iter_json_batches`, one `(value, byte_start, byte_len, invalid)` at a time."""
    values: list = []
    for batch in iter_json_batches(path, values.append, read_bytes):
        yield from zip(values, *batch, strict=True)
        values.clear()


def _batches(stream: _TextStream, scan, sink, room: list[int], array: bool) -> Iterator[JsonBatch]:
    """The value loop: one C-scanner call, one sink call and one separator regex match per sample."""
    after = _AFTER_ELEMENT if array else _WS
    expect_value, done = True, False
    while not done:
        buf, pos, eof = stream.buf, stream.pos, stream.eof
        n, ascii_text = len(buf), buf.isascii()
        if expect_value:  # the separator's trailing whitespace may have been cut by the read size
            pos = _WS(buf, pos).end()
        starts, ends, invalid = [], [], []
        limit = room[0]
        while True:
            if expect_value:
                if len(starts) >= limit:
                    break  # the caller's chunk is full
                if n - pos < _REFILL and not eof:
                    break  # read on first: a value cut by the read size costs a failed parse
                if pos == n and eof and not array:
                    done = True
                    break
                try:
                    value, end = scan(buf, pos)
                except StopIteration as err:
                    message, at = "Expecting value", err.value
                except json.JSONDecodeError as err:
                    message, at = err.msg, err.pos
                else:
                    if end < n or eof:
                        if not ascii_text:
                            span = buf[pos:end]
                            if not span.isascii():
                                value, bad = _utf8_value(scan, span)
                                if bad:
                                    invalid.append(len(starts))
                        sink(value)
                        starts.append(pos)
                        ends.append(end)
                        pos, expect_value = end, False
                        continue
                    break  # a number or literal may go on in the next piece
                if not eof and (message.startswith("Unterminated string") or at >= n - _TAIL):
                    break  # the value is probably cut by the read size: read on and parse it again
                stream.pos = pos
                raise stream.error(message, at)
            match = after(buf, pos)
            pos = match.end()
            if array:
                separator = match.group(1)
                if separator == ",":
                    if pos < n and buf[pos] == "]":
                        stream.pos = pos
                        raise stream.error("trailing comma before ']'")
                    expect_value = True
                    if pos < n:
                        continue
                elif separator == "]":
                    done = True
                elif pos < n or eof:
                    stream.pos = pos
                    raise stream.error("expecting ',' or ']' after a sample" if pos < n
                                       else "unterminated list (expecting ',' or ']')")
            else:
                expect_value = True
                done = pos == n and eof
                if pos < n:
                    continue
            break
        base = stream.base
        flags = [False] * len(starts)
        for i in invalid:
            flags[i] = True
        yield [s + base for s in starts], [e - s for s, e in zip(starts, ends, strict=True)], flags
        stream.pos = pos
        if len(starts) >= limit and pos < n:
            continue  # stopped for the caller, not for want of text
        if not done and not stream.fill():
            if array:
                raise stream.error("unterminated list")
            done = True


# ---------------------------------------------------------------------------------------------------
# Samples -> columnar chunks


@dataclass
class SampleChunk:
    """Up to `chunk_rows` consecutive samples, columnar. Rows are numbered from 0 in file order.

    Turns are kept for well-formed rows only, as their values; a turn's `from` is not stored but checked
    while reading (`roles_ok`: exactly "human", "gpt", "human", ...), so `conversations()` writes the
    alternating roles, which are the real ones for every row whose `roles_ok` is true.
    """

    row_start: int
    byte_start: np.ndarray  # int64: the sample's span in the file
    byte_len: np.ndarray  # int64
    id: pa.StringArray  # an integer id as its decimal string; null when missing or of the wrong type
    image: pa.StringArray  # as written (surrogates cleaned); null: text-only, or not a string
    has_image: np.ndarray  # bool: the sample has an `image` key
    problem: list  # None (well formed) | a key of PROBLEMS
    n_turns: np.ndarray  # int32: len(conversations) when it is a list, else 0
    non_utf8: np.ndarray  # bool
    extra_keys: np.ndarray  # bool: keys besides id, image, conversations (they are not carried on)
    roles_ok: np.ndarray  # bool: the turns' `from` alternate human/gpt from human (false when not well formed)
    turn_offsets: np.ndarray  # int64 (n + 1): turns of row i are turn_value[off[i]:off[i+1]] (well-formed rows)
    turn_value: pa.StringArray
    well_formed: np.ndarray = None  # bool: problem is None (derived)

    def __post_init__(self):
        if self.well_formed is None:
            self.well_formed = np.fromiter((p is None for p in self.problem), bool, len(self.problem))

    @property
    def n(self) -> int:
        return len(self.problem)

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.row_start, self.row_start + self.n, dtype=np.int64)

    def turn_positions(self) -> np.ndarray:
        """Position of every stored turn within its conversation (0, 1, 2, ...)."""
        counts = np.diff(self.turn_offsets)
        return np.arange(int(self.turn_offsets[-1]), dtype=np.int64) - np.repeat(self.turn_offsets[:-1], counts)

    def conversations(self) -> pa.ListArray:
        """list<struct<from, value>> per row; null for rows with a structural problem."""
        roles = pa.array(ROLES, pa.string()).take(pa.array(self.turn_positions() % 2))
        turns = pa.StructArray.from_arrays([roles, self.turn_value], fields=list(TURN_TYPE))
        offsets = pa.array(self.turn_offsets.astype(np.int32))
        return pa.ListArray.from_arrays(offsets, turns, type=CONVERSATIONS_TYPE, mask=pa.array(~self.well_formed))

    def to_batch(self) -> pa.RecordBatch:
        """The chunk as one Arrow record batch (CHUNK_SCHEMA), e.g. to move it between processes."""
        values = pa.ListArray.from_arrays(pa.array(self.turn_offsets.astype(np.int32)), self.turn_value)
        return pa.record_batch([
            pa.array(self.byte_start), pa.array(self.byte_len), self.id, self.image, pa.array(self.has_image),
            pa.array(self.problem, pa.string()), pa.array(self.n_turns), pa.array(self.non_utf8),
            pa.array(self.extra_keys), pa.array(self.roles_ok), values,
        ], schema=CHUNK_SCHEMA)

    @classmethod
    def from_batch(cls, batch: pa.RecordBatch, row_start: int) -> SampleChunk:
        values = batch.column("values")
        offsets = values.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        problem = batch.column("problem")
        # Arrays read from IPC share one buffer per message: copy what outlives the chunk (ids go into the
        # check table kept until the end), or each chunk's whole message would stay in memory with it.
        rows = pa.array(np.arange(batch.num_rows))
        return cls(
            row_start=row_start,
            byte_start=batch.column("byte_start").to_numpy().copy(),
            byte_len=batch.column("byte_len").to_numpy().copy(),
            id=batch.column("id").take(rows),
            image=batch.column("image").take(rows),
            has_image=batch.column("has_image").to_numpy(zero_copy_only=False),
            problem=problem.to_pylist(),
            n_turns=batch.column("n_turns").to_numpy(),
            non_utf8=batch.column("non_utf8").to_numpy(zero_copy_only=False),
            extra_keys=batch.column("extra_keys").to_numpy(zero_copy_only=False),
            roles_ok=batch.column("roles_ok").to_numpy(zero_copy_only=False),
            turn_offsets=offsets - offsets[0],
            turn_value=values.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])),
            well_formed=problem.is_null().to_numpy(zero_copy_only=False),
        )


CHUNK_SCHEMA = pa.schema([
    ("byte_start", pa.int64()), ("byte_len", pa.int64()), ("id", pa.string()), ("image", pa.string()),
    ("has_image", pa.bool_()), ("problem", pa.string()), ("n_turns", pa.int32()), ("non_utf8", pa.bool_()),
    ("extra_keys", pa.bool_()), ("roles_ok", pa.bool_()), ("values", pa.list_(pa.string())),
])


def _clean(text):
    """Lone surrogates (undecodable bytes, lone escapes) -> U+FFFD, so the text can be stored as UTF-8."""
    return _SURROGATE.sub("\ufffd", text) if type(text) is str else text


def iter_sample_chunks(
    path: str | os.PathLike,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    read_bytes: int = DEFAULT_READ_BYTES,
) -> Iterator[SampleChunk]:
    """Stream a LLaVA annotation file as `SampleChunk`s of `chunk_rows` rows (fewer when `chunk_bytes` source
    bytes come first, and in the last chunk). Raises AnnotationFormatError if the file is not JSON."""
    row_start, size = 0, 0
    cols = _Columns()
    room = [chunk_rows]
    for starts, lengths, invalid in iter_json_batches(path, cols.add, read_bytes, room):
        cols.add_spans(starts, lengths, invalid)
        size += sum(lengths)
        if len(cols.rows) >= chunk_rows or size >= chunk_bytes:
            chunk = cols.finish(row_start)
            row_start += chunk.n
            size = 0
            yield chunk
        room[0] = chunk_rows - len(cols.rows)
    if cols.rows or row_start == 0:
        yield cols.finish(row_start)


_FROM = operator.itemgetter("from")
_VALUE = operator.itemgetter("value")
_ROLE_PATTERN = [ROLES[i % 2] for i in range(1 << 12)]


class _Columns:
    """Python lists that become one SampleChunk. Per sample only type checks, the roles comparison and list
    building happen here; every content check (<image> counts, empty turns, paths) is vectorised later."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.byte_start, self.byte_len, self.non_utf8 = [], [], []
        self.rows: list[tuple] = []  # (id, image, has_image, problem, n_turns, extra_keys, roles_ok, kept turns)
        self.turn_value = []

    def add_spans(self, starts: list[int], lengths: list[int], invalid: list[bool]) -> None:
        """The byte spans (and undecodable-byte flags) of the samples added since the last call."""
        self.byte_start.extend(starts)
        self.byte_len.extend(lengths)
        self.non_utf8.extend(invalid)

    def add(self, sample) -> None:
        """One parsed sample. Strings holding lone surrogates (undecodable bytes) are found and cleaned
        when the chunk is converted to Arrow, which refuses them (`_scrub`)."""
        problem = sample_id = image = None
        has_image = extra = roles_ok = False
        n_turns = kept = 0
        if type(sample) is not dict:
            problem = "not_an_object"
        else:
            raw_id = sample.get("id", _MISSING)
            if type(raw_id) is str and raw_id:
                sample_id = raw_id
            elif type(raw_id) is int:
                sample_id = str(raw_id)
            else:
                problem = "missing_id" if raw_id is _MISSING else "bad_id"
            if "image" in sample:
                has_image = True
                image = sample["image"]
                if type(image) is not str:
                    image, problem = None, problem or "bad_image"
            conversations = sample.get("conversations", _MISSING)
            extra = len(sample) > (raw_id is not _MISSING) + has_image + (conversations is not _MISSING)
            if type(conversations) is not list:
                problem = problem or ("missing_conversations" if conversations is _MISSING
                                      else "conversations_not_a_list")
            else:
                n_turns = len(conversations)
                if n_turns < 2 or n_turns % 2:
                    problem = problem or "bad_turn_count"
                elif problem is None:
                    values = self.turn_value
                    before = len(values)
                    try:  # value types are checked by the Arrow conversion of the whole chunk
                        roles_ok = list(map(_FROM, conversations)) == (
                            _ROLE_PATTERN[:n_turns] if n_turns <= len(_ROLE_PATTERN) else
                            [ROLES[i % 2] for i in range(n_turns)])
                        values.extend(map(_VALUE, conversations))
                        kept = n_turns
                    except (TypeError, KeyError):
                        del values[before:]
                        problem, roles_ok, kept = "turn_not_an_object", False, 0
        self.rows.append((sample_id, image, has_image, problem, n_turns, extra, roles_ok, kept))

    def _columns(self) -> None:
        """Rows -> column lists (once, when the chunk is finished)."""
        names = ("id", "image", "has_image", "problem", "n_turns", "extra_keys", "roles_ok", "kept")
        for i, name in enumerate(names):
            setattr(self, name, list(map(operator.itemgetter(i), self.rows)))

    def _arrays(self) -> tuple[pa.Array, ...]:
        arrays = tuple(pa.array(values, type=pa.string()) for values in (self.id, self.image, self.turn_value))
        if arrays[2].null_count:
            raise TypeError("a turn's value is null")
        return arrays

    def _scrub(self) -> None:
        """Slow path, only for a chunk whose Arrow conversion failed: find the rows with non-string
        values (-> problem) or with lone surrogates from undecodable bytes or JSON escapes such as
        "\\udc80" (valid JSON, but not encodable as UTF-8 -> non_utf8, cleaned)."""
        values, offset = [], 0
        for i, kept in enumerate(self.kept):
            row_values = self.turn_value[offset:offset + kept]
            offset += kept
            if any(type(t) is not str for t in row_values):
                self.problem[i], self.kept[i], self.roles_ok[i] = "turn_not_a_string", 0, False
                continue
            strings = [self.id[i], self.image[i], *row_values]
            if any(type(t) is str and _SURROGATE.search(t) for t in strings):
                self.non_utf8[i] = True
                self.id[i], self.image[i] = _clean(self.id[i]), _clean(self.image[i])
                row_values = list(map(_clean, row_values))
            values.extend(row_values)
        self.turn_value = values

    def finish(self, row_start: int) -> SampleChunk:
        self._columns()
        try:
            ids, images, values = self._arrays()
        except (pa.ArrowException, TypeError, ValueError):  # ValueError: UnicodeEncodeError (surrogates)
            self._scrub()
            ids, images, values = self._arrays()
        offsets = np.zeros(len(self.problem) + 1, dtype=np.int64)
        np.cumsum(self.kept, out=offsets[1:])
        chunk = SampleChunk(
            row_start=row_start,
            byte_start=np.array(self.byte_start, dtype=np.int64),
            byte_len=np.array(self.byte_len, dtype=np.int64),
            id=ids,
            image=images,
            has_image=np.array(self.has_image, dtype=bool),
            problem=self.problem,
            n_turns=np.array(self.n_turns, dtype=np.int32),
            non_utf8=np.array(self.non_utf8, dtype=bool),
            extra_keys=np.array(self.extra_keys, dtype=bool),
            roles_ok=np.array(self.roles_ok, dtype=bool),
            turn_offsets=offsets,
            turn_value=values,
        )
        self._reset()
        return chunk


def read_spans(source, spans: Iterable[tuple[int, int]]) -> list[bytes]:
    """The exact source bytes of samples, given their (byte_start, byte_len); `source` is the annotation
    file's path or an open binary file object."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fh:
            return read_spans(fh, spans)
    out = []
    for start, length in spans:
        source.seek(start)
        out.append(source.read(length))
    return out
