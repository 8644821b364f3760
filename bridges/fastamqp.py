"""A tiny blocking AMQP 0-9-1 client: one RPC call over RabbitMQ's direct reply-to, stdlib only.

Why not aio-pika or pamqp: `csext forward` runs once per CloudStack action and must start in
tens of milliseconds. `import aio_pika` costs 100-200 ms, and even `import pamqp` costs ~23 ms
here (it pulls in logging, typing, datetime and decimal), about as much as the interpreter's
own start. The handful of methods one RPC needs fits in this module, which imports only
`socket` and `struct`; tests/test_forward.py cross-checks every frame it builds or parses
against pamqp.

What it does: connect (amqp or amqps, PLAIN auth), open channel 1, consume
`amq.rabbitmq.reply-to` with no-ack, publish one message (mandatory), and read deliveries
until the one with the expected correlation id arrives. Every socket operation is bounded by
one absolute deadline (`time.monotonic()` seconds). Heartbeats are declined (the connection
lives only as long as one call, which the deadline bounds).
"""

from __future__ import annotations

import socket
import struct
import time
from urllib.parse import parse_qsl, unquote, urlsplit

TYPE_CHECKING = False  # `typing` costs ~5 ms to import: only type checkers read it here
if TYPE_CHECKING:
    from typing import Any

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

CONNECTION_START = (10, 10)
CONNECTION_START_OK = (10, 11)
CONNECTION_TUNE = (10, 30)
CONNECTION_TUNE_OK = (10, 31)
CONNECTION_OPEN = (10, 40)
CONNECTION_OPEN_OK = (10, 41)
CONNECTION_CLOSE = (10, 50)
CONNECTION_CLOSE_OK = (10, 51)
CONNECTION_BLOCKED = (10, 60)
CHANNEL_OPEN = (20, 10)
CHANNEL_OPEN_OK = (20, 11)
CHANNEL_CLOSE = (20, 40)
CHANNEL_CLOSE_OK = (20, 41)
QUEUE_DECLARE = (50, 10)
QUEUE_DECLARE_OK = (50, 11)
BASIC_CONSUME = (60, 20)
BASIC_CONSUME_OK = (60, 21)
BASIC_PUBLISH = (60, 40)
BASIC_RETURN = (60, 50)
BASIC_DELIVER = (60, 60)
BASIC_CLASS = 60

# Content header property flags (AMQP 0-9-1 basic class), in wire order.
PROPERTY_ORDER = (
    ("content_type", "s"),
    ("content_encoding", "s"),
    ("headers", "F"),
    ("delivery_mode", "o"),
    ("priority", "o"),
    ("correlation_id", "s"),
    ("reply_to", "s"),
    ("expiration", "s"),
    ("message_id", "s"),
    ("timestamp", "L"),
    ("type", "s"),
    ("user_id", "s"),
    ("app_id", "s"),
    ("cluster_id", "s"),
)


class AmqpError(Exception):
    """Root of this module's errors; the message is safe to show (no password)."""


class AmqpTimeout(AmqpError):
    """The deadline passed before the broker answered."""


class AmqpUnreachable(AmqpError):
    """No TCP (or TLS) connection to the broker."""


class AmqpClosed(AmqpError):
    """The broker closed the connection or channel; the message carries its reply text."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class AmqpBlocked(AmqpError):
    """The broker blocks publishers (a memory or disk alarm): it sent `connection.blocked` and
    stopped reading this connection, so the call cannot reach a worker until the alarm clears."""


class AmqpReturned(AmqpError):
    """The broker returned a mandatory message: nothing is bound to route it."""


class AmqpNoConsumer(AmqpError):
    """Nothing consumed the call's queue within the grace period, and no reply came."""

    def __init__(self, message: str, queue_exists: bool) -> None:
        super().__init__(message)
        self.queue_exists = queue_exists


NO_QUEUE = -1
"""`Connection.queue_consumers`: the queue does not exist."""
_PENDING = -2


# ---------------------------------------------------------------------------- URL


class BrokerUrl:
    """A parsed broker URL (a plain class: dataclasses cost ~9 ms of import on this path)."""

    __slots__ = ("host", "password", "port", "query", "tls", "username", "vhost")

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        vhost: str,
        tls: bool,
        query: dict[str, str],
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.vhost = vhost
        self.tls = tls
        self.query = query

    def __repr__(self) -> str:
        return f"BrokerUrl({self.safe!r})"

    @property
    def safe(self) -> str:
        """For messages: never shows the password."""
        scheme = "amqps" if self.tls else "amqp"
        vhost = "" if self.vhost == "/" else self.vhost.replace("/", "%2F")
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{vhost}"


def parse_url(url: str) -> BrokerUrl:
    """An amqp:// or amqps:// URL, read the way aio-pika reads it ("/" or "" path = vhost "/")."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise AmqpError("amqp_url must start with amqp:// or amqps://")
    tls = parts.scheme == "amqps"
    try:
        port = parts.port or (5671 if tls else 5672)
    except ValueError as exc:
        raise AmqpError("amqp_url has an invalid port") from exc
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return BrokerUrl(
        host=parts.hostname or "localhost",
        port=port,
        username=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password else "guest",
        vhost=unquote(path) or "/",
        tls=tls,
        query=dict(parse_qsl(parts.query)),
    )


# ---------------------------------------------------------------------------- encoding


def shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise AmqpError(f"AMQP short string longer than 255 bytes: {value[:40]!r}...")
    return bytes((len(raw),)) + raw


def longstr(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def table(values: dict[str, Any]) -> bytes:
    """Field table with the value types this client sends: bool, int, str, bytes, nested dict."""
    out = bytearray()
    for key, value in values.items():
        out += shortstr(key)
        if isinstance(value, bool):
            out += b"t" + bytes((int(value),))
        elif isinstance(value, int):
            out += b"l" + struct.pack(">q", value)
        elif isinstance(value, str):
            out += b"S" + longstr(value.encode())
        elif isinstance(value, bytes):
            out += b"x" + longstr(value)
        elif isinstance(value, dict):
            out += b"F" + table(value)
        else:
            raise AmqpError(f"unsupported AMQP table value for {key!r}: {type(value).__name__}")
    return longstr(bytes(out))


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def method(channel: int, ids: tuple[int, int], args: bytes = b"") -> bytes:
    return frame(FRAME_METHOD, channel, struct.pack(">HH", *ids) + args)


def content_header(channel: int, body_size: int, properties: dict[str, Any]) -> bytes:
    flags = 0
    data = bytearray()
    for index, (name, kind) in enumerate(PROPERTY_ORDER):
        value = properties.get(name)
        if value is None:
            continue
        flags |= 1 << (15 - index)
        if kind == "s":
            data += shortstr(value)
        elif kind == "F":
            data += table(value)
        elif kind == "o":
            data += bytes((value,))
        else:
            data += struct.pack(">Q", value)
    payload = struct.pack(">HHQH", BASIC_CLASS, 0, body_size, flags) + bytes(data)
    return frame(FRAME_HEADER, channel, payload)


def body_frames(channel: int, body: bytes, frame_max: int) -> bytes:
    """The body split into frames no bigger than frame_max (8 bytes of framing each)."""
    step = max(1, frame_max - 8)
    return b"".join(
        frame(FRAME_BODY, channel, body[i : i + step]) for i in range(0, len(body), step)
    )


def start_ok(username: str, password: str, connection_name: str) -> bytes:
    props = {
        "product": "csext forward",
        "connection_name": connection_name,
        "capabilities": {"authentication_failure_close": True, "connection.blocked": True},
    }
    response = b"\x00" + username.encode() + b"\x00" + password.encode()
    args = table(props) + shortstr("PLAIN") + longstr(response) + shortstr("en_US")
    return method(0, CONNECTION_START_OK, args)


def publish(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: dict[str, Any],
    frame_max: int,
) -> bytes:
    """Basic.Publish (mandatory) + content header + body frames, ready to send."""
    args = struct.pack(">H", 0) + shortstr(exchange) + shortstr(routing_key) + b"\x01"
    return (
        method(channel, BASIC_PUBLISH, args)
        + content_header(channel, len(body), properties)
        + body_frames(channel, body, frame_max)
    )


# ---------------------------------------------------------------------------- decoding


class Reader:
    """Cursor over one frame payload."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.pos = offset

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise AmqpError("malformed AMQP frame from the broker (truncated field)")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def shortstr(self) -> str:
        return self.take(self.unpack(">B")).decode("utf-8", "replace")

    def longstr(self) -> bytes:
        return self.take(self.unpack(">I"))

    def skip_table(self) -> None:
        self.take(self.unpack(">I"))


def parse_header_properties(payload: bytes) -> tuple[int, dict[str, Any]]:
    """Body size and the properties this client reads (tables are skipped, not decoded)."""
    reader = Reader(payload, 4)
    body_size = reader.unpack(">Q")
    flags = reader.unpack(">H")
    props: dict[str, Any] = {}
    for index, (name, kind) in enumerate(PROPERTY_ORDER):
        if not flags & (1 << (15 - index)):
            continue
        if kind == "s":
            props[name] = reader.shortstr()
        elif kind == "F":
            reader.skip_table()
            props[name] = {}
        elif kind == "o":
            props[name] = reader.unpack(">B")
        else:
            props[name] = reader.unpack(">Q")
    return body_size, props


def queue_declare_passive(channel: int, queue: str) -> bytes:
    """Queue.Declare with passive set: the broker answers with the queue's message and
    consumer counts, or closes the channel with 404 when it does not exist."""
    return method(
        channel, QUEUE_DECLARE, struct.pack(">H", 0) + shortstr(queue) + b"\x01" + table({})
    )


def parse_declare_ok(payload: bytes) -> tuple[str, int, int]:
    """(queue, message count, consumer count) of a Queue.DeclareOk."""
    reader = Reader(payload, 4)
    name = reader.shortstr()
    messages, consumers = reader.unpack(">I"), reader.unpack(">I")
    return name, messages, consumers


def parse_close(payload: bytes) -> tuple[int, str]:
    reader = Reader(payload, 4)
    code = reader.unpack(">H")
    return code, reader.shortstr()


def parse_tune(payload: bytes) -> tuple[int, int, int]:
    reader = Reader(payload, 4)
    return reader.unpack(">H"), reader.unpack(">I"), reader.unpack(">H")


def parse_start_mechanisms(payload: bytes) -> list[str]:
    reader = Reader(payload, 6)  # class, method, version major, minor
    reader.skip_table()
    return reader.longstr().decode("ascii", "replace").split()


def method_ids(payload: bytes) -> tuple[int, int]:
    if len(payload) < 4:
        raise AmqpError("malformed AMQP method frame from the broker")
    return struct.unpack(">HH", payload[:4])


# ---------------------------------------------------------------------------- connection


def _reply_to_consume() -> bytes:
    """Basic.Consume arguments for direct reply-to, no-ack."""
    return (
        struct.pack(">H", 0)
        + shortstr("amq.rabbitmq.reply-to")
        + shortstr("")
        + b"\x02"  # no_ack
        + table({})
    )


class Message:
    __slots__ = ("body", "properties")

    def __init__(self, *, properties: dict[str, Any], body: bytes) -> None:
        self.properties = properties
        self.body = body


class Connection:
    """One blocking connection with channel 1; every call bounded by `deadline` (monotonic)."""

    def __init__(self, url: BrokerUrl, deadline: float, name: str = "csext forward") -> None:
        self.url = url
        self.deadline = deadline
        self.name = name
        self.frame_max = 131072
        self.sock: socket.socket | None = None
        self._buffer = bytearray()
        self.blocked = False
        """The broker sent connection.blocked: it reads nothing more from this connection."""
        # call_served's state: the reply awaited, and the channel queues are asked on
        self._correlation = ""
        self._reply: Message | None = None
        self._probe_channel = 1
        self._probe_closed = True
        self._probe: int | None = _PENDING

    # -- socket primitives

    def _remaining(self, what: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AmqpTimeout(f"deadline passed while {what}")
        return left

    def _connect_socket(self) -> socket.socket:
        address = (self.url.host, self.url.port)
        try:
            sock = socket.create_connection(address, timeout=self._remaining("connecting"))
        except TimeoutError as exc:
            raise AmqpTimeout(f"timed out connecting to {self.url.safe}") from exc
        except OSError as exc:
            raise AmqpUnreachable(f"cannot reach the broker at {self.url.safe}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.url.tls:
            sock = self._wrap_tls(sock)
        return sock

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        import ssl  # only amqps pays for it

        query = self.url.query
        context = ssl.create_default_context(cafile=query.get("cafile") or None)
        if query.get("certfile"):
            context.load_cert_chain(query["certfile"], query.get("keyfile") or None)
        if query.get("no_verify_ssl") in ("1", "true", "yes"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            sock.settimeout(self._remaining("starting TLS"))
            return context.wrap_socket(sock, server_hostname=self.url.host)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise AmqpUnreachable(f"TLS handshake with {self.url.safe} failed: {exc}") from exc

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        try:
            self.sock.settimeout(self._remaining("sending to the broker"))
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise AmqpTimeout("timed out sending to the broker") from exc
        except OSError as exc:
            raise AmqpUnreachable(f"connection to {self.url.safe} lost: {exc}") from exc

    def _fill(self, size: int, what: str) -> None:
        while len(self._buffer) < size:
            assert self.sock is not None
            try:
                self.sock.settimeout(self._remaining(what))
                chunk = self.sock.recv(65536)
            except TimeoutError as exc:
                raise AmqpTimeout(f"deadline passed while {what}") from exc
            except OSError as exc:
                raise AmqpUnreachable(f"connection to {self.url.safe} lost: {exc}") from exc
            if not chunk:
                raise AmqpClosed(f"the broker at {self.url.safe} closed the connection")
            self._buffer += chunk

    def read_frame(self, what: str) -> tuple[int, int, bytes]:
        """(type, channel, payload) of the next frame; heartbeats are skipped."""
        while True:
            self._fill(7, what)
            kind, channel, size = struct.unpack(">BHI", self._buffer[:7])
            self._fill(7 + size + 1, what)
            payload = bytes(self._buffer[7 : 7 + size])
            if self._buffer[7 + size : 8 + size] != FRAME_END:
                raise AmqpError("malformed AMQP frame from the broker (bad frame end)")
            del self._buffer[: 8 + size]
            if kind != FRAME_HEARTBEAT:
                return kind, channel, payload

    def expect(self, ids: tuple[int, int], what: str) -> bytes:
        """The next method frame, which must be `ids`; broker closes become AmqpClosed."""
        while True:
            kind, _channel, payload = self.read_frame(what)
            if kind != FRAME_METHOD:
                continue
            got = method_ids(payload)
            self._raise_on_close(got, payload)
            if got == ids:
                return payload

    def _raise_on_close(self, ids: tuple[int, int], payload: bytes) -> None:
        """Broker closes become AmqpClosed, and `connection.blocked` AmqpBlocked at once: a
        blocked connection is not read by the broker, so waiting would only run out the
        caller's deadline (RabbitMQ blocks a connection when it publishes during an alarm)."""
        if ids == CONNECTION_BLOCKED:
            self.blocked = True
            reason = Reader(payload, 4).shortstr() or "a resource alarm"
            raise AmqpBlocked(
                f"RabbitMQ at {self.url.safe} is blocking publishers ({reason}: a memory or "
                "disk alarm is in effect), so the call cannot be delivered until it clears; "
                "check the broker with `rabbitmq-diagnostics alarms`"
            )
        if ids not in (CONNECTION_CLOSE, CHANNEL_CLOSE):
            return
        code, text = parse_close(payload)
        if ids == CONNECTION_CLOSE:
            self._send_quietly(method(0, CONNECTION_CLOSE_OK))
            scope = "connection"
        else:
            self._send_quietly(method(1, CHANNEL_CLOSE_OK))
            scope = "channel"
        raise AmqpClosed(f"the broker closed the {scope}: {code} {text}", code)

    def _send_quietly(self, data: bytes) -> None:
        try:
            if self.sock is not None:
                self.sock.sendall(data)
        except OSError:
            pass

    # -- protocol steps

    def open(self) -> None:
        """TCP (+TLS), protocol header, Start/StartOk, Tune/TuneOk, Open, Channel.Open."""
        self.sock = self._connect_socket()
        self.send(PROTOCOL_HEADER)
        start = self.expect(CONNECTION_START, "waiting for Connection.Start")
        if "PLAIN" not in parse_start_mechanisms(start):
            raise AmqpError(f"the broker at {self.url.safe} does not offer PLAIN authentication")
        self.send(start_ok(self.url.username, self.url.password, self.name))
        tune = self._expect_tune()
        channel_max, frame_max, _heartbeat = parse_tune(tune)
        self.frame_max = frame_max or self.frame_max
        tune_ok = struct.pack(">HIH", channel_max, self.frame_max, 0)
        open_args = shortstr(self.url.vhost) + shortstr("") + b"\x00"
        self.send(
            method(0, CONNECTION_TUNE_OK, tune_ok)
            + method(0, CONNECTION_OPEN, open_args)
            + method(1, CHANNEL_OPEN, shortstr(""))
        )
        self.expect(CONNECTION_OPEN_OK, "opening the connection")
        self.expect(CHANNEL_OPEN_OK, "opening a channel")

    def _expect_tune(self) -> bytes:
        try:
            return self.expect(CONNECTION_TUNE, "authenticating")
        except AmqpClosed as exc:
            if exc.code == 403:
                raise AmqpClosed(
                    f"the broker at {self.url.safe} refused the login (check user and password "
                    "in amqp_url)",
                    403,
                ) from exc
            raise

    def call(self, exchange: str, routing_key: str, body: bytes, props: dict[str, Any]) -> Message:
        """Consume direct reply-to, publish, and wait for the reply with our correlation id."""
        consume = _reply_to_consume()
        props = {**props, "reply_to": "amq.rabbitmq.reply-to"}
        self.send(
            method(1, BASIC_CONSUME, consume)
            + publish(1, exchange, routing_key, body, props, self.frame_max)
        )
        self.expect(BASIC_CONSUME_OK, "subscribing to direct reply-to")
        return self._wait_reply(props["correlation_id"])

    def call_served(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        props: dict[str, Any],
        queue: str,
        grace: float,
    ) -> Message:
        """`call`, but only while something consumes `queue` (the queue the call routes to).

        A passive Queue.Declare returns the queue's consumer count. With a consumer the call
        goes out as `call` sends it. Without one (no worker serves the extension, or the queue
        is gone) the message may wait only `grace` seconds for a consumer (its expiration, so
        it is never run after the caller gave up), the queue is asked again every 0.2 s, and
        AmqpNoConsumer is raised when none appeared and no reply came. A worker answers an
        unknown or disabled extension through the alternate exchange within that time.
        """
        self._correlation = props["correlation_id"]
        self._reply = None
        self.send(method(1, BASIC_CONSUME, _reply_to_consume()))
        consumers = self.queue_consumers(queue)
        served = consumers is None or consumers > 0  # None: the broker would not say
        expiration = props["expiration"] if served else str(max(1, int(grace * 1000)))
        props = {**props, "reply_to": "amq.rabbitmq.reply-to", "expiration": expiration}
        self.send(publish(1, exchange, routing_key, body, props, self.frame_max))
        if not served:
            give_up = min(time.monotonic() + grace, self.deadline)
            while self._reply is None and not served:
                self._pump_until(min(time.monotonic() + 0.2, give_up), "waiting for a worker")
                if self._reply is not None:
                    break
                consumers = self.queue_consumers(queue)
                served = consumers is None or consumers > 0
                if not served and time.monotonic() >= give_up:
                    raise AmqpNoConsumer(
                        f"nothing consumes queue {queue!r} (waited {grace:g}s)",
                        queue_exists=consumers != NO_QUEUE,
                    )
        self._pump_until(self.deadline, "waiting for the reply")
        assert self._reply is not None
        return self._reply

    def queue_consumers(self, queue: str) -> int | None:
        """Consumers of `queue`: NO_QUEUE when it does not exist, None when the broker refused
        to say (e.g. no permission); frames for the call on channel 1 are handled meanwhile."""
        if self._probe_closed:  # a 404 closes the channel it was asked on: open the next one
            self._probe_channel += 1
            self._probe_closed = False
            self.send(method(self._probe_channel, CHANNEL_OPEN, shortstr("")))
        self._probe = _PENDING
        self.send(queue_declare_passive(self._probe_channel, queue))
        while self._probe == _PENDING:
            self._dispatch(*self.read_frame("asking the broker about the extension's queue"))
        return self._probe

    def _pump_until(self, until: float, what: str) -> None:
        """Handle frames until the reply arrived or `until` (monotonic) passed; only the real
        deadline raises AmqpTimeout."""
        deadline = self.deadline
        self.deadline = min(deadline, until)
        try:
            while self._reply is None:
                self._dispatch(*self.read_frame(what))
        except AmqpTimeout:
            if time.monotonic() >= deadline:
                raise
        finally:
            self.deadline = deadline

    def _dispatch(self, kind: int, channel: int, payload: bytes) -> None:
        """One frame of `call_served`: probe answers on the probe channel, the reply (or a
        return or close) on channel 1 and 0."""
        if kind != FRAME_METHOD:
            return
        ids = method_ids(payload)
        if channel > 1:
            if channel != self._probe_channel:
                return
            if ids == QUEUE_DECLARE_OK:
                self._probe = parse_declare_ok(payload)[2]
            elif ids == CHANNEL_CLOSE:
                code, _text = parse_close(payload)
                self._send_quietly(method(channel, CHANNEL_CLOSE_OK))
                self._probe_closed = True
                self._probe = NO_QUEUE if code == 404 else None
            return
        self._raise_on_close(ids, payload)
        if ids == BASIC_RETURN:
            code, text = parse_close(payload)
            self._read_content()
            raise AmqpReturned(f"the broker could not route the call: {code} {text}")
        if ids == BASIC_DELIVER:
            message = self._read_content()
            if message.properties.get("correlation_id") == self._correlation:
                self._reply = message

    def _wait_reply(self, correlation_id: str) -> Message:
        while True:
            kind, _channel, payload = self.read_frame("waiting for the reply")
            if kind != FRAME_METHOD:
                continue
            ids = method_ids(payload)
            self._raise_on_close(ids, payload)
            if ids == BASIC_RETURN:
                code, text = parse_close(payload)
                self._read_content()
                raise AmqpReturned(f"the broker could not route the call: {code} {text}")
            if ids == BASIC_DELIVER:
                message = self._read_content()
                if message.properties.get("correlation_id") == correlation_id:
                    return message

    def _read_content(self) -> Message:
        kind, _channel, payload = self.read_frame("reading a message header")
        if kind != FRAME_HEADER:
            raise AmqpError("malformed AMQP content from the broker (no header frame)")
        size, props = parse_header_properties(payload)
        body = bytearray()
        while len(body) < size:
            kind, _channel, chunk = self.read_frame("reading a message body")
            if kind != FRAME_BODY:
                raise AmqpError("malformed AMQP content from the broker (no body frame)")
            body += chunk
        return Message(properties=props, body=bytes(body))

    def close(self, grace: float = 1.0) -> None:
        """Connection.Close and a short wait for Close-Ok (so the broker logs no error); a
        blocked connection is just dropped (the broker would not read the Close)."""
        if self.sock is None:
            return
        if self.blocked:
            self.sock.close()
            self.sock = None
            return
        try:
            self.deadline = min(self.deadline, time.monotonic() + grace)
            self.send(
                method(0, CONNECTION_CLOSE, struct.pack(">H", 200) + shortstr("bye") + b"\0\0\0\0")
            )
            self.expect(CONNECTION_CLOSE_OK, "closing")
        except AmqpError:
            pass
        finally:
            self.sock.close()
            self.sock = None


# ---------------------------------------------------------------------------- several nodes

CONFIG_ERRORS = (403, 530)
"""Close codes that every node of a cluster would answer alike (login refused, vhost not
allowed): trying the next node would only hide the real error."""


def open_first(urls: str, deadline: float, name: str = "csext forward") -> Connection:
    """An open connection to the first of the comma-separated `urls` that answers.

    Each node gets an equal share of the time left (the last one all of it), so a node that
    hangs instead of refusing cannot use up the caller's deadline. With one URL this is
    `Connection(...).open()`, errors unchanged.
    """
    brokers = [parse_url(url.strip()) for url in urls.split(",") if url.strip()]
    if not brokers:
        raise AmqpError("amqp_url is empty: give at least one amqp:// URL")
    failures: list[str] = []
    for index, broker in enumerate(brokers):
        last = index == len(brokers) - 1
        share = (deadline - time.monotonic()) / (len(brokers) - index)
        conn = Connection(broker, deadline if last else time.monotonic() + share, name)
        try:
            conn.open()
        except AmqpError as exc:
            _drop(conn)
            if len(brokers) == 1 or (isinstance(exc, AmqpClosed) and exc.code in CONFIG_ERRORS):
                raise
            failures.append(f"{broker.safe}: {exc}")
            continue
        conn.deadline = deadline
        return conn
    raise AmqpUnreachable("no broker answered: " + "; ".join(failures))


def _drop(conn: Connection) -> None:
    """Close a connection that failed to open, without waiting for the broker."""
    if conn.sock is not None:
        conn.sock.close()
        conn.sock = None
