"""HPACK (RFC 7541) for the HTTP/2 hot path (h2conn.py): a header-block decoder with Huffman
decoding and an encoder that indexes repeated fields in the dynamic table.

Compiled with mypyc (hatch_build.NATIVE_MODULES); this source is the reference and runs as is
when the build is absent. It replaces the `hpack` package on the proxy path because decoding
and encoding there cost more per relayed gRPC call than the whole relay (bench/RESULTS.md,
"HTTP/2 and gRPC"). Names and values are bytes throughout; nothing is lower-cased or
validated here (h2conn.py checks request fields).

The encoder never Huffman-codes (allowed by §5.2; the CPU matters more than ~20 % of header
bytes on loopback) and never indexes credentials (§7.1.3): `authorization`,
`proxy-authorization` and `cookie`/`set-cookie` go out as never-indexed literals.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["Decoder", "Encoder", "HPACKError", "huffman_decode", "memo_put"]

T = TypeVar("T")


def memo_put(memo: dict[bytes, T], key: bytes, value: T, max_key: int, max_entries: int) -> None:
    """Remembers `value` for a short `key` in a bounded memo, cleared when full: the HTTP/2
    path's parse caches, for inputs that repeat call after call (the same relayed heads, the
    same Huffman-coded values)."""
    if len(key) <= max_key:
        if len(memo) >= max_entries:
            memo.clear()
        memo[key] = value


class HPACKError(Exception):
    """A malformed header block: a connection error COMPRESSION_ERROR (RFC 9113 §4.3)."""


# RFC 7541 Appendix A: the static table (index 1..61).
STATIC_TABLE: tuple[tuple[bytes, bytes], ...] = (
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
)

# RFC 7541 Appendix B: the Huffman code of each symbol (0..255, 256 = EOS) and its length in bits.
HUFFMAN_CODES: tuple[int, ...] = (
    0x1FF8,
    0x7FFFD8,
    0xFFFFFE2,
    0xFFFFFE3,
    0xFFFFFE4,
    0xFFFFFE5,
    0xFFFFFE6,
    0xFFFFFE7,
    0xFFFFFE8,
    0xFFFFEA,
    0x3FFFFFFC,
    0xFFFFFE9,
    0xFFFFFEA,
    0x3FFFFFFD,
    0xFFFFFEB,
    0xFFFFFEC,
    0xFFFFFED,
    0xFFFFFEE,
    0xFFFFFEF,
    0xFFFFFF0,
    0xFFFFFF1,
    0xFFFFFF2,
    0x3FFFFFFE,
    0xFFFFFF3,
    0xFFFFFF4,
    0xFFFFFF5,
    0xFFFFFF6,
    0xFFFFFF7,
    0xFFFFFF8,
    0xFFFFFF9,
    0xFFFFFFA,
    0xFFFFFFB,
    0x14,
    0x3F8,
    0x3F9,
    0xFFA,
    0x1FF9,
    0x15,
    0xF8,
    0x7FA,
    0x3FA,
    0x3FB,
    0xF9,
    0x7FB,
    0xFA,
    0x16,
    0x17,
    0x18,
    0x0,
    0x1,
    0x2,
    0x19,
    0x1A,
    0x1B,
    0x1C,
    0x1D,
    0x1E,
    0x1F,
    0x5C,
    0xFB,
    0x7FFC,
    0x20,
    0xFFB,
    0x3FC,
    0x1FFA,
    0x21,
    0x5D,
    0x5E,
    0x5F,
    0x60,
    0x61,
    0x62,
    0x63,
    0x64,
    0x65,
    0x66,
    0x67,
    0x68,
    0x69,
    0x6A,
    0x6B,
    0x6C,
    0x6D,
    0x6E,
    0x6F,
    0x70,
    0x71,
    0x72,
    0xFC,
    0x73,
    0xFD,
    0x1FFB,
    0x7FFF0,
    0x1FFC,
    0x3FFC,
    0x22,
    0x7FFD,
    0x3,
    0x23,
    0x4,
    0x24,
    0x5,
    0x25,
    0x26,
    0x27,
    0x6,
    0x74,
    0x75,
    0x28,
    0x29,
    0x2A,
    0x7,
    0x2B,
    0x76,
    0x2C,
    0x8,
    0x9,
    0x2D,
    0x77,
    0x78,
    0x79,
    0x7A,
    0x7B,
    0x7FFE,
    0x7FC,
    0x3FFD,
    0x1FFD,
    0xFFFFFFC,
    0xFFFE6,
    0x3FFFD2,
    0xFFFE7,
    0xFFFE8,
    0x3FFFD3,
    0x3FFFD4,
    0x3FFFD5,
    0x7FFFD9,
    0x3FFFD6,
    0x7FFFDA,
    0x7FFFDB,
    0x7FFFDC,
    0x7FFFDD,
    0x7FFFDE,
    0xFFFFEB,
    0x7FFFDF,
    0xFFFFEC,
    0xFFFFED,
    0x3FFFD7,
    0x7FFFE0,
    0xFFFFEE,
    0x7FFFE1,
    0x7FFFE2,
    0x7FFFE3,
    0x7FFFE4,
    0x1FFFDC,
    0x3FFFD8,
    0x7FFFE5,
    0x3FFFD9,
    0x7FFFE6,
    0x7FFFE7,
    0xFFFFEF,
    0x3FFFDA,
    0x1FFFDD,
    0xFFFE9,
    0x3FFFDB,
    0x3FFFDC,
    0x7FFFE8,
    0x7FFFE9,
    0x1FFFDE,
    0x7FFFEA,
    0x3FFFDD,
    0x3FFFDE,
    0xFFFFF0,
    0x1FFFDF,
    0x3FFFDF,
    0x7FFFEB,
    0x7FFFEC,
    0x1FFFE0,
    0x1FFFE1,
    0x3FFFE0,
    0x1FFFE2,
    0x7FFFED,
    0x3FFFE1,
    0x7FFFEE,
    0x7FFFEF,
    0xFFFEA,
    0x3FFFE2,
    0x3FFFE3,
    0x3FFFE4,
    0x7FFFF0,
    0x3FFFE5,
    0x3FFFE6,
    0x7FFFF1,
    0x3FFFFE0,
    0x3FFFFE1,
    0xFFFEB,
    0x7FFF1,
    0x3FFFE7,
    0x7FFFF2,
    0x3FFFE8,
    0x1FFFFEC,
    0x3FFFFE2,
    0x3FFFFE3,
    0x3FFFFE4,
    0x7FFFFDE,
    0x7FFFFDF,
    0x3FFFFE5,
    0xFFFFF1,
    0x1FFFFED,
    0x7FFF2,
    0x1FFFE3,
    0x3FFFFE6,
    0x7FFFFE0,
    0x7FFFFE1,
    0x3FFFFE7,
    0x7FFFFE2,
    0xFFFFF2,
    0x1FFFE4,
    0x1FFFE5,
    0x3FFFFE8,
    0x3FFFFE9,
    0xFFFFFFD,
    0x7FFFFE3,
    0x7FFFFE4,
    0x7FFFFE5,
    0xFFFEC,
    0xFFFFF3,
    0xFFFED,
    0x1FFFE6,
    0x3FFFE9,
    0x1FFFE7,
    0x1FFFE8,
    0x7FFFF3,
    0x3FFFEA,
    0x3FFFEB,
    0x1FFFFEE,
    0x1FFFFEF,
    0xFFFFF4,
    0xFFFFF5,
    0x3FFFFEA,
    0x7FFFF4,
    0x3FFFFEB,
    0x7FFFFE6,
    0x3FFFFEC,
    0x3FFFFED,
    0x7FFFFE7,
    0x7FFFFE8,
    0x7FFFFE9,
    0x7FFFFEA,
    0x7FFFFEB,
    0xFFFFFFE,
    0x7FFFFEC,
    0x7FFFFED,
    0x7FFFFEE,
    0x7FFFFEF,
    0x7FFFFF0,
    0x3FFFFEE,
    0x3FFFFFFF,
)
HUFFMAN_LENGTHS: tuple[int, ...] = (
    13,
    23,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    24,
    30,
    28,
    28,
    30,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    30,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    28,
    6,
    10,
    10,
    12,
    13,
    6,
    8,
    11,
    10,
    10,
    8,
    11,
    8,
    6,
    6,
    6,
    5,
    5,
    5,
    6,
    6,
    6,
    6,
    6,
    6,
    6,
    7,
    8,
    15,
    6,
    12,
    10,
    13,
    6,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    7,
    8,
    7,
    8,
    13,
    19,
    13,
    14,
    6,
    15,
    5,
    6,
    5,
    6,
    5,
    6,
    6,
    6,
    5,
    7,
    7,
    6,
    6,
    6,
    5,
    6,
    7,
    6,
    5,
    5,
    6,
    7,
    7,
    7,
    7,
    7,
    15,
    11,
    14,
    13,
    28,
    20,
    22,
    20,
    20,
    22,
    22,
    22,
    23,
    22,
    23,
    23,
    23,
    23,
    23,
    24,
    23,
    24,
    24,
    22,
    23,
    24,
    23,
    23,
    23,
    23,
    21,
    22,
    23,
    22,
    23,
    23,
    24,
    22,
    21,
    20,
    22,
    22,
    23,
    23,
    21,
    23,
    22,
    22,
    24,
    21,
    22,
    23,
    23,
    21,
    21,
    22,
    21,
    23,
    22,
    23,
    23,
    20,
    22,
    22,
    22,
    23,
    22,
    22,
    23,
    26,
    26,
    20,
    19,
    22,
    23,
    22,
    25,
    26,
    26,
    26,
    27,
    27,
    26,
    24,
    25,
    19,
    21,
    26,
    27,
    27,
    26,
    27,
    24,
    21,
    21,
    26,
    26,
    28,
    27,
    27,
    27,
    20,
    24,
    20,
    21,
    22,
    21,
    21,
    23,
    22,
    22,
    25,
    25,
    24,
    24,
    26,
    23,
    26,
    27,
    26,
    26,
    27,
    27,
    27,
    27,
    27,
    28,
    27,
    27,
    27,
    27,
    27,
    26,
    30,
)

_STATIC_LEN = len(STATIC_TABLE)
# Full (name, value) → static index, and name → its first static index.
_STATIC_FULL: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _i, _entry in enumerate(STATIC_TABLE, 1):
    _STATIC_FULL.setdefault(_entry, _i)
    _STATIC_NAME.setdefault(_entry[0], _i)

_NEVER_INDEXED = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})
_ENTRY_OVERHEAD = 32  # §4.1


def _build_huffman() -> tuple[list[int], list[bool]]:
    """A nibble-at-a-time decoding table: for each internal node of the code tree (the state)
    and each 4-bit input, the next state, the symbol completed (at most one: the shortest
    code is 5 bits) and whether EOS was hit. Entry = next << 10 | (symbol + 1) << 1 | eos."""
    children: list[list[int]] = [[-1, -1]]  # internal nodes; a leaf is -(symbol + 2)
    for sym in range(257):
        code, length = HUFFMAN_CODES[sym], HUFFMAN_LENGTHS[sym]
        node = 0
        for bit_at in range(length - 1, 0, -1):
            bit = (code >> bit_at) & 1
            nxt = children[node][bit]
            if nxt == -1:
                children.append([-1, -1])
                nxt = len(children) - 1
                children[node][bit] = nxt
            node = nxt
        children[node][code & 1] = -(sym + 2)
    table = [0] * (len(children) * 16)
    for state in range(len(children)):
        for nibble in range(16):
            node = state
            emitted = 0
            eos = 0
            for bit_at in (3, 2, 1, 0):
                nxt = children[node][(nibble >> bit_at) & 1]
                if nxt < -1:
                    sym = -nxt - 2
                    if sym == 256:
                        eos = 1
                    emitted = sym + 1
                    node = 0
                elif nxt == -1:  # no such code: only past EOS, which fails anyway
                    eos = 1
                    node = 0
                else:
                    node = nxt
            table[state * 16 + nibble] = (node << 10) | (emitted << 1) | eos
    # Valid ends (§5.2): at a symbol boundary, or within at most 7 padding bits, all ones.
    accept = [False] * len(children)
    node = 0
    accept[0] = True
    for _ in range(7):
        node = children[node][1]
        accept[node] = True
    return table, accept


_HUFFMAN, _HUFFMAN_ACCEPT = _build_huffman()


_huffman_cache: dict[bytes, bytes] = {}


def huffman_decode(data: bytes) -> bytes:
    """§5.2 with Appendix B's code. Short strings are cached: peers that never index
    (nginx's responses) send the same Huffman-coded `server`, `content-type` and `date`
    values on every response. Bounded; cleared when full."""
    cached = _huffman_cache.get(data)
    if cached is not None:
        return cached
    out = _huffman_decode(data)
    memo_put(_huffman_cache, data, out, 64, 512)
    return out


def _huffman_decode(data: bytes) -> bytes:
    table = _HUFFMAN
    out = bytearray()
    state = 0
    for byte in data:
        entry = table[(state << 4) | (byte >> 4)]
        if entry & 1:
            raise HPACKError("EOS in a Huffman-coded string")
        if entry & 0x3FE:
            out.append(((entry >> 1) & 0x1FF) - 1)
        state = entry >> 10
        entry = table[(state << 4) | (byte & 15)]
        if entry & 1:
            raise HPACKError("EOS in a Huffman-coded string")
        if entry & 0x3FE:
            out.append(((entry >> 1) & 0x1FF) - 1)
        state = entry >> 10
    if not _HUFFMAN_ACCEPT[state]:
        raise HPACKError("bad Huffman padding")
    return bytes(out)


# Every one-byte string, so that the common short integers (§5.1) cost no allocation.
_BYTES: tuple[bytes, ...] = tuple(bytes((i,)) for i in range(256))


def _encode_int(first: int, prefix_bits: int, value: int) -> bytes:
    """§5.1: `first` holds the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return _BYTES[first | value]
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


class Decoder:
    """One connection's inbound header compression context."""

    def __init__(self, max_table_size: int = 4096, max_list_size: int = 1 << 20) -> None:
        # What our SETTINGS_HEADER_TABLE_SIZE allows (we keep the default 4096).
        self.max_allowed = max_table_size
        self.max_table_size = max_table_size
        self.max_list_size = max_list_size
        self.table: list[tuple[bytes, bytes]] = []  # newest last
        self.table_size = 0
        self._pos = 0

    def _int(self, data: bytes, pos: int, prefix_bits: int) -> int:
        limit = (1 << prefix_bits) - 1
        value = data[pos] & limit
        pos += 1
        if value == limit:
            shift = 0
            while True:
                if pos >= len(data):
                    raise HPACKError("truncated integer")
                byte = data[pos]
                pos += 1
                value += (byte & 127) << shift
                shift += 7
                if not byte & 128:
                    break
                if shift > 28:
                    raise HPACKError("integer too large")
        self._pos = pos
        return value

    def _string(self, data: bytes, pos: int) -> bytes:
        if pos >= len(data):
            raise HPACKError("truncated string")
        huffman = data[pos] & 128
        length = self._int(data, pos, 7)
        pos = self._pos
        end = pos + length
        if end > len(data):
            raise HPACKError("truncated string")
        self._pos = end
        raw = data[pos:end]
        return huffman_decode(raw) if huffman else raw

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if index <= 0:
            raise HPACKError("index 0")
        if index <= _STATIC_LEN:
            return STATIC_TABLE[index - 1]
        at = index - _STATIC_LEN
        table = self.table
        if at > len(table):
            raise HPACKError(f"index {index} beyond the table")
        return table[-at]

    def _add(self, field: tuple[bytes, bytes]) -> None:
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        table = self.table
        if size > self.max_table_size:
            table.clear()  # §4.4: an entry larger than the table empties it
            self.table_size = 0
            return
        self.table_size += size
        while self.table_size > self.max_table_size:
            old = table.pop(0)
            self.table_size -= len(old[0]) + len(old[1]) + _ENTRY_OVERHEAD
        table.append(field)

    def _resize(self, size: int) -> None:
        if size > self.max_allowed:
            raise HPACKError(f"table size update {size} over the limit {self.max_allowed}")
        self.max_table_size = size
        table = self.table
        while self.table_size > size:
            old = table.pop(0)
            self.table_size -= len(old[0]) + len(old[1]) + _ENTRY_OVERHEAD

    def decode(self, data: bytes) -> list[tuple[bytes, bytes]]:
        fields: list[tuple[bytes, bytes]] = []
        pos = 0
        end = len(data)
        list_size = 0
        size_update_allowed = True
        while pos < end:
            byte = data[pos]
            if byte & 0x80:  # §6.1 indexed
                field = self._entry(self._int(data, pos, 7))
                pos = self._pos
            elif byte & 0x40:  # §6.2.1 literal with incremental indexing
                index = self._int(data, pos, 6)
                pos = self._pos
                name = self._entry(index)[0] if index else self._string(data, pos)
                if not index:
                    pos = self._pos
                field = (name, self._string(data, pos))
                pos = self._pos
                self._add(field)
            elif byte & 0x20:  # §6.3 dynamic table size update, only at the block's start
                if not size_update_allowed:
                    raise HPACKError("table size update after a field")
                self._resize(self._int(data, pos, 5))
                pos = self._pos
                continue
            else:  # §6.2.2 / §6.2.3 literal without indexing / never indexed
                index = self._int(data, pos, 4)
                pos = self._pos
                name = self._entry(index)[0] if index else self._string(data, pos)
                if not index:
                    pos = self._pos
                field = (name, self._string(data, pos))
                pos = self._pos
            size_update_allowed = False
            list_size += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
            if list_size > self.max_list_size:
                raise HPACKError("header list too large")
            fields.append(field)
        return fields


class Encoder:
    """One connection's outbound header compression context."""

    def __init__(self) -> None:
        self.max_table_size = 4096  # the peer's SETTINGS_HEADER_TABLE_SIZE, at most 4096
        self._table: list[tuple[tuple[bytes, bytes], int]] = []  # (field, size), oldest first
        self._size = 0
        self._inserted = 0  # entries ever added; entry k (0-based) has index 62 + inserted-1-k
        self._where: dict[tuple[bytes, bytes], int] = {}  # field → its latest k
        self._names: dict[bytes, int] = {}  # name → latest k of an entry with that name
        self._pending_resize = -1

    def set_max_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE changed; we use at most 4096 of it."""
        size = min(size, 4096)
        if size != self.max_table_size:
            self.max_table_size = size
            self._pending_resize = size if self._pending_resize < 0 else min(self._pending_resize, size)
            self._evict(size)

    def _evict(self, limit: int) -> None:
        table = self._table
        while self._size > limit and table:
            (field, size) = table.pop(0)
            self._size -= size
            k = self._inserted - len(table) - 1  # the k of the entry just dropped
            if self._where.get(field) == k:
                del self._where[field]
            if self._names.get(field[0]) == k:
                del self._names[field[0]]

    def encode(self, fields: list[tuple[bytes, bytes]]) -> bytes:
        parts: list[bytes] = []  # joined once: cheaper in compiled code than a bytearray
        if self._pending_resize >= 0:
            if self._pending_resize != self.max_table_size:
                parts.append(_encode_int(0x20, 5, self._pending_resize))  # the minimum first (§4.2)
            parts.append(_encode_int(0x20, 5, self.max_table_size))
            self._pending_resize = -1
        where = self._where
        for field in fields:
            index = _STATIC_FULL.get(field, 0)
            if index:
                parts.append(_encode_int(0x80, 7, index))
                continue
            k = where.get(field, -1)
            if k >= 0:
                parts.append(_encode_int(0x80, 7, _STATIC_LEN + self._inserted - k))
                continue
            name, value = field
            name_index = _STATIC_NAME.get(name, 0)
            if not name_index:
                k = self._names.get(name, -1)
                if k >= 0:
                    name_index = _STATIC_LEN + self._inserted - k
            size = len(name) + len(value) + _ENTRY_OVERHEAD
            if name in _NEVER_INDEXED:
                parts.append(_encode_int(0x10, 4, name_index))
            elif size > self.max_table_size // 2:
                parts.append(_encode_int(0x00, 4, name_index))
            else:
                parts.append(_encode_int(0x40, 6, name_index))
                self._insert(field, size)
            if not name_index:
                parts.append(_encode_int(0, 7, len(name)))
                parts.append(name)
            parts.append(_encode_int(0, 7, len(value)))
            parts.append(value)
        return b"".join(parts)

    def _insert(self, field: tuple[bytes, bytes], size: int) -> None:
        self._evict(self.max_table_size - size)
        k = self._inserted
        self._inserted += 1
        self._table.append((field, size))
        self._size += size
        self._where[field] = k
        self._names[field[0]] = k
