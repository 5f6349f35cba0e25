"""SPDY/3.1 framing, as much as a kubelet's streaming server needs: the apiserver speaks it to the node for exec.

A session is a byte stream of frames after an HTTP upgrade. The client (the apiserver, or kubectl's SPDY fallback
proxied through it) opens streams with SYN_STREAM; the server answers each with SYN_REPLY, then both send DATA, a
FIN flag half-closing a stream. RST_STREAM aborts one stream, GOAWAY the session; PING is echoed. SETTINGS and
WINDOW_UPDATE are read and ignored: the Go implementation (moby/spdystream) does no flow control either.

Header blocks (name/value pairs, lower-case names, values joined by NUL) are zlib-compressed with the dictionary of
the SPDY/3 draft, one compression context per direction for the whole session: every header block the peer sends
must be decompressed in order, whether its frame is wanted or not. Ours are flushed with Z_SYNC_FLUSH, so each
frame carries a complete block.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3
DATA, SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 0, 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
MAX_LENGTH = (1 << 24) - 1  # a frame's 24-bit length field
STREAM_ID_MASK = 0x7FFFFFFF
# RST_STREAM status codes
PROTOCOL_ERROR, REFUSED_STREAM, CANCEL = 1, 3, 5
# GOAWAY status codes
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR = 0, 1
HEADER_BLOCK_MAX = 1 << 20  # decompressed; the Go side allows 1000 headers of at most 16 MiB, nobody sends that

# The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1): these words, each prefixed
# by its length as 4 bytes big-endian, followed by a run of common status lines, dates and media types.
_DICTIONARY_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges age "
    "allow authorization cache-control connection content-base content-encoding content-language content-length "
    "content-location content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
    "proxy-authenticate proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status 200+OK version HTTP/1.1 url public set-cookie "
    "keep-alive origin"
)
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _dictionary() -> bytes:
    words = [w.replace("+", " ") for w in _DICTIONARY_WORDS.split()]  # "200+OK" is the one word with a space
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + _DICTIONARY_TAIL.encode()


DICTIONARY = _dictionary()


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3.1: the session cannot go on."""


@dataclass(frozen=True)
class Frame:
    """One frame as read: `kind` is DATA or a control frame type; `value` is the RST_STREAM/GOAWAY status, the
    PING id or the WINDOW_UPDATE delta."""

    kind: int
    stream_id: int = 0
    flags: int = 0
    data: bytes = b""
    headers: dict[str, list[str]] = field(default_factory=dict)
    value: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN) and self.kind in (DATA, SYN_STREAM, SYN_REPLY, HEADERS)


def encode_headers(headers: dict[str, list[str]]) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        n, v = name.lower().encode(), "\0".join(values).encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def decode_headers(block: bytes) -> dict[str, list[str]]:
    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(block):
            raise ProtocolError("truncated header block")
        pos += n
        return block[pos - n : pos]

    pos = 0
    (count,) = struct.unpack(">I", take(4))
    headers: dict[str, list[str]] = {}
    for _ in range(count):
        name = take(struct.unpack(">I", take(4))[0]).decode("latin-1").lower()
        value = take(struct.unpack(">I", take(4))[0]).decode("latin-1")
        headers.setdefault(name, []).extend(value.split("\0"))
    return headers


class FrameReader:
    """Incremental parser: `feed(bytes)` returns the frames completed so far."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= 8:
            length = int.from_bytes(self._buf[5:8], "big")
            if len(self._buf) < 8 + length:
                break
            head, payload = bytes(self._buf[:8]), bytes(self._buf[8 : 8 + length])
            del self._buf[: 8 + length]
            frames.append(self._frame(head, payload))
        return frames

    def _headers(self, compressed: bytes) -> dict[str, list[str]]:
        try:
            block = self._inflate.decompress(compressed, HEADER_BLOCK_MAX)
        except zlib.error as e:
            raise ProtocolError(f"header block: {e}") from None
        if self._inflate.unconsumed_tail:
            raise ProtocolError(f"header block over {HEADER_BLOCK_MAX} bytes")
        return decode_headers(block)

    def _frame(self, head: bytes, payload: bytes) -> Frame:
        word, flags = struct.unpack(">I", head[:4])[0], head[4]
        if not word & 0x80000000:
            return Frame(DATA, word & STREAM_ID_MASK, flags, payload)
        version, kind = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version}, not {VERSION}")

        def u32(offset: int) -> int:
            if len(payload) < offset + 4:
                raise ProtocolError(f"control frame {kind}: {len(payload)} bytes is too short")
            return int(struct.unpack(">I", payload[offset : offset + 4])[0])

        if kind == SYN_STREAM:
            u32(6)  # stream id, associated stream id, priority and slot
            return Frame(kind, u32(0) & STREAM_ID_MASK, flags, headers=self._headers(payload[10:]))
        if kind in (SYN_REPLY, HEADERS):
            return Frame(kind, u32(0) & STREAM_ID_MASK, flags, headers=self._headers(payload[4:]))
        if kind in (RST_STREAM, WINDOW_UPDATE):
            return Frame(kind, u32(0) & STREAM_ID_MASK, flags, value=u32(4))
        if kind == PING:
            return Frame(kind, flags=flags, value=u32(0))
        if kind == GOAWAY:
            return Frame(kind, u32(0) & STREAM_ID_MASK, flags, value=u32(4))
        return Frame(kind, flags=flags, data=payload)  # SETTINGS, and types SPDY/3.1 says to ignore


class FrameWriter:
    """Encodes frames; owns the session's outgoing header compression context, so frames must be sent in the
    order they were encoded."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zdict=DICTIONARY)

    @staticmethod
    def _control(kind: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | VERSION, kind, flags << 24 | len(payload)) + payload

    def _compress(self, headers: dict[str, list[str]]) -> bytes:
        return self._deflate.compress(encode_headers(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_stream(self, stream_id: int, headers: dict[str, list[str]], fin: bool = False) -> bytes:
        """What a client sends (the tests play the apiserver with it)."""
        body = struct.pack(">IIH", stream_id, 0, 0) + self._compress(headers)
        return self._control(SYN_STREAM, FLAG_FIN if fin else 0, body)

    def syn_reply(self, stream_id: int, headers: dict[str, list[str]] | None = None, fin: bool = False) -> bytes:
        return self._control(
            SYN_REPLY, FLAG_FIN if fin else 0, struct.pack(">I", stream_id) + self._compress(headers or {})
        )

    @staticmethod
    def data(stream_id: int, payload: bytes = b"", fin: bool = False) -> bytes:
        if len(payload) > MAX_LENGTH:
            raise ValueError(f"DATA frame of {len(payload)} bytes")
        return struct.pack(">II", stream_id & STREAM_ID_MASK, (FLAG_FIN if fin else 0) << 24 | len(payload)) + payload

    def rst_stream(self, stream_id: int, status: int) -> bytes:
        return self._control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def ping(self, ping_id: int) -> bytes:
        return self._control(PING, 0, struct.pack(">I", ping_id))

    def goaway(self, last_good_stream: int, status: int = GOAWAY_OK) -> bytes:
        return self._control(GOAWAY, 0, struct.pack(">II", last_good_stream, status))
