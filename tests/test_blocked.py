"""`connection.blocked` in csext forward's AMQP client, cross-checked against pamqp's frames (the
real broker side is tests/faults/test_11_memory_alarm.py)."""

from __future__ import annotations

import socket
import time

import pytest
from pamqp import commands, frame

from csext.bridges import fastamqp


def _method_payload(method: commands.Connection.Blocked) -> bytes:
    raw = frame.marshal(method, 0)
    return raw[7:-1]  # frame header (type, channel, size) and frame end cut off


def test_blocked_frame_fails_the_call_at_once_and_names_the_alarm() -> None:
    conn = fastamqp.Connection(fastamqp.parse_url("amqp://u:secret@h:5672/"), time.monotonic() + 5)
    payload = _method_payload(commands.Connection.Blocked(reason="low on memory"))
    with pytest.raises(fastamqp.AmqpBlocked) as caught:
        conn._raise_on_close(fastamqp.method_ids(payload), payload)
    text = str(caught.value)
    assert "blocking publishers" in text and "low on memory" in text
    assert "secret" not in text
    assert conn.blocked


def test_a_blocked_connection_is_dropped_without_waiting_for_close_ok() -> None:
    ours, theirs = socket.socketpair()
    conn = fastamqp.Connection(fastamqp.parse_url("amqp://h/"), time.monotonic() + 30)
    conn.sock, conn.blocked = ours, True
    conn.close(grace=5)
    assert conn.sock is None
    assert theirs.recv(10) == b""  # closed without a Connection.Close the broker would not read
    theirs.close()
