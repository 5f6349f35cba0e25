"""SPDY/3.1 framing of the node agent (divbase_localcluster.node.spdy), checked against bytes the v1.36 apiserver
really sent to it for `kubectl exec`."""

from __future__ import annotations

import pytest
from divbase_localcluster.node import spdy

# What the apiserver's stream translator sent for `printf 'hi\n' | kubectl exec -i sleeper -- cat`: four
# SYN_STREAMs (header blocks compressed by Go in one zlib context with the SPDY dictionary), stdin data and its
# FIN, then, once it had the status, RST_STREAM CANCEL for the streams it still held.
APISERVER_SESSION = bytes.fromhex(
    "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff8003000100"
    "00001700000003000000000000c22e555c92929907000000ffff800300010000001900000005000000000000c22ac5565c92925f5a02"
    "000000ffff800300010000001500000007000000000000c229975a5404000000ffff000000030000000368690a000000030100000080"
    "0300030000000800000001000000058003000300000008000000050000000580030003000000080000000700000005"
)


def test_frames_the_apiserver_sent_are_read() -> None:
    frames = spdy.FrameReader().feed(APISERVER_SESSION)
    opened = [(f.stream_id, f.headers) for f in frames if f.kind == spdy.SYN_STREAM]
    assert opened == [
        (1, {"streamtype": ["error"]}),
        (3, {"streamtype": ["stdin"]}),
        (5, {"streamtype": ["stdout"]}),
        (7, {"streamtype": ["stderr"]}),
    ]
    data = [(f.stream_id, f.data, f.fin) for f in frames if f.kind == spdy.DATA]
    assert data == [(3, b"hi\n", False), (3, b"", True)]
    assert [(f.stream_id, f.value) for f in frames if f.kind == spdy.RST_STREAM] == [(1, 5), (5, 5), (7, 5)]


def test_frames_may_arrive_in_any_pieces() -> None:
    reader = spdy.FrameReader()
    frames = [f for i in range(len(APISERVER_SESSION)) for f in reader.feed(APISERVER_SESSION[i : i + 1])]
    assert frames == spdy.FrameReader().feed(APISERVER_SESSION)


def test_what_the_server_writes_reads_back() -> None:
    """Several header blocks share one compression context each way, as in a session."""
    writer, reader = spdy.FrameWriter(), spdy.FrameReader()
    wire = (
        writer.syn_reply(1)
        + writer.syn_reply(3, {"X-Thing": ["a", "b"]}, fin=True)
        + writer.data(3, b"out")
        + writer.data(3, fin=True)
        + writer.rst_stream(5, spdy.CANCEL)
        + writer.ping(7)
        + writer.goaway(7)
    )
    frames = reader.feed(wire)
    assert [(f.kind, f.stream_id) for f in frames] == [
        (spdy.SYN_REPLY, 1),
        (spdy.SYN_REPLY, 3),
        (spdy.DATA, 3),
        (spdy.DATA, 3),
        (spdy.RST_STREAM, 5),
        (spdy.PING, 0),
        (spdy.GOAWAY, 7),
    ]
    assert frames[1].headers == {"x-thing": ["a", "b"]} and frames[1].fin
    assert (frames[2].data, frames[2].fin, frames[3].fin) == (b"out", False, True)
    assert (frames[4].value, frames[5].value, frames[6].value) == (spdy.CANCEL, 7, spdy.GOAWAY_OK)


def test_other_versions_and_broken_header_blocks_end_the_session() -> None:
    with pytest.raises(spdy.ProtocolError, match="SPDY version 2"):
        spdy.FrameReader().feed(bytes.fromhex("80020006000000040000000b"))
    with pytest.raises(spdy.ProtocolError, match="header block"):
        spdy.FrameReader().feed(bytes.fromhex("8003000100000010") + bytes(10) + b"garbag")
