"""The Raft port's frame parser (raft/wire.py FrameBuffer): caps checked before a body is buffered.

pysyncobj frames are a signed native 32-bit length prefix (struct 'i') and a body;
the library buffered up to 2**31-1 bytes before decrypting. FrameBuffer rejects a
negative or oversized prefix as soon as its 4 bytes are in, accepts exactly the
cap, and never holds more than cap + 4 bytes.
"""
from __future__ import annotations

import struct

import pytest

from raft_ledger_node.ledger import limits
from raft_ledger_node.raft.wire import FrameBuffer, FrameRejected

CAP = 1000


def frame(body: bytes) -> bytes:
    return struct.pack("i", len(body)) + body


def test_negative_length_is_rejected_on_its_prefix():
    buf = FrameBuffer(CAP)
    with pytest.raises(FrameRejected):
        buf.feed(struct.pack("i", -1))


def test_oversized_length_is_rejected_before_any_body_byte():
    buf = FrameBuffer(CAP)
    with pytest.raises(FrameRejected):
        buf.feed(struct.pack("i", CAP + 1))
    buf = FrameBuffer(limits.raft_frame_bytes_max)
    with pytest.raises(FrameRejected):
        buf.feed(struct.pack("i", 0x7FFFFFFF))


def test_prefix_split_across_reads_is_checked_when_whole():
    buf = FrameBuffer(CAP)
    prefix = struct.pack("i", CAP + 1)
    buf.feed(prefix[:3])
    assert buf.wanted() == 1
    with pytest.raises(FrameRejected):
        buf.feed(prefix[3:])


def test_exact_cap_and_empty_frames_are_accepted():
    buf = FrameBuffer(CAP)
    body = bytes(range(256)) * 3 + b"x" * (CAP - 768)
    data = frame(body) + frame(b"")
    # feed in pieces no larger than the reader would ask for
    pos = 0
    got = []
    while pos < len(data):
        n = min(buf.room(), 7)
        buf.feed(data[pos : pos + n])
        pos += n
        while (m := buf.pop()) is not None:
            got.append(m)
    assert got == [body, b""]
    assert len(buf) == 0


def test_never_holds_more_than_cap_plus_prefix():
    buf = FrameBuffer(CAP)
    buf.feed(frame(b"a" * CAP))
    assert buf.room() == 0 and buf.wanted() == 0
    with pytest.raises(FrameRejected):
        buf.feed(b"more")
    assert buf.pop() == b"a" * CAP
    assert buf.room() == CAP + 4


def test_a_raised_cap_applies_to_the_next_frame_not_a_checked_one():
    # The hello frame authenticates the peer; the frame behind it may be large.
    buf = FrameBuffer(16)
    big = b"b" * 100
    buf.feed(frame(b"hello"))
    assert buf.pop() == b"hello"
    buf.cap = 200
    buf.feed(frame(big))
    assert buf.pop() == big


def test_a_frame_behind_the_front_is_checked_when_it_reaches_the_front():
    buf = FrameBuffer(16)
    buf.feed(frame(b"ok") + struct.pack("i", 17))
    assert buf.pop() == b"ok"
    with pytest.raises(FrameRejected):
        buf.pop()
