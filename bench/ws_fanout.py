"""Live deltas to many WebSocket clients: delay from the committed event to each client, against a
raw Redis pub/sub fan-out to the same number of subscribers, measured in the same run.

    .venv/bin/python -m bench.ws_fanout [--clients 100,500] [--sessions 1,50] [--events 200] [--rate 20]

Ours:     `boocode web` (gunicorn, as the product starts it; a fresh process per scenario) with N
          real WebSocket clients on 1 session or spread over 50; a writer appends events through the
          real store (append_event, commit, publish after commit: Database.transaction, as the
          worker does) at --rate events a second, round-robin over the sessions. The delay runs from
          the moment the publish starts (right after the commit) to the client's receipt of the frame.
Floor:    the same N clients as raw Redis subscribers of the same channels, the same writer: what
          the pub/sub transport alone costs on this machine.
Both client sides run on one selector thread (WebSocket frames / RESP read by hand), so the
clients cost little next to what is measured. Prints p50/p99/max, missing and duplicate events
per client, the web process' threads, RSS and CPU idle and with the sockets open, and the ratios;
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request

from bench.common import REPO, scratch, wait_until
from orchestrator.domain.enums import Role
from orchestrator.settings import Settings
from orchestrator.store import events, projects, sessions, users
from orchestrator.store.database import Database
from orchestrator.tracing.publisher import RedisPublisher, session_channel
from web.access import WS_THREAD_RESERVE

PER_USER = 8  # BOOCODE_WS_MAX_PER_USER's default: one user per 8 sockets
DRAIN_SECONDS = 15.0


# ---------------------------------------------------------------- what the writer commits


class TimedPublisher:
    """The real Redis publisher, noting when each event's publish starts (right after its commit)."""

    def __init__(self, inner: RedisPublisher) -> None:
        self.inner = inner
        self.committed: dict[tuple[str, int], float] = {}

    def publish(self, event: dict[str, Any]) -> None:
        self.committed[(event["session_id"], event["seq"])] = time.monotonic()
        self.inner.publish(event)


def write(db: Database, session_ids: list[uuid.UUID], count: int, rate: float) -> None:
    started = time.monotonic()
    for index in range(count):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with db.transaction() as session:
            events.append_event(session, session_ids[index % len(session_ids)], "text.delta",
                                {"index": index, "text": "x" * 80})


# ---------------------------------------------------------------- clients on one selector thread


@dataclass(eq=False)
class Client:
    session_id: str
    sock: socket.socket
    feed: Callable[["Client", bytes, float], None]
    state: Any = None  # the protocol object (wsproto connection or RESP buffer)
    received: list[tuple[float, str]] = field(default_factory=list)  # (time, frame text)
    closed: str | None = None


class Receivers:
    """Many client sockets read by one thread; each frame's receipt time is noted, parsed later."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.clients: list[Client] = []
        self.stopping = False
        self.thread = threading.Thread(target=self.run, daemon=True)

    def add(self, client: Client) -> None:
        client.sock.setblocking(False)
        self.clients.append(client)
        self.selector.register(client.sock, selectors.EVENT_READ, client)

    def run(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.1):
                client: Client = key.data
                try:
                    data = client.sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError as error:
                    data, client.closed = b"", str(error)
                now = time.monotonic()
                if not data:
                    client.closed = client.closed or "eof"
                    self.selector.unregister(client.sock)
                    continue
                client.feed(client, data, now)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        for client in self.clients:
            client.sock.close()

    def count(self) -> int:
        return sum(len(client.received) for client in self.clients)


def open_websocket(port: int, session_id: str, token: str, since: int) -> Client:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection = WSConnection(ConnectionType.CLIENT)
    sock.sendall(connection.send(Request(host=f"127.0.0.1:{port}", target=f"/ws/sessions/{session_id}?since={since}",
                                         extra_headers=[(b"authorization", f"Bearer {token}".encode())])))
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise SystemExit(f"the server closed the handshake of a client of session {session_id}")
        connection.receive_data(data)
        for event in connection.events():
            if isinstance(event, AcceptConnection):
                # the server sends right after its 101 only what a replay since `since` holds: nothing
                return Client(session_id, sock, feed_websocket, state=[b""])
            if isinstance(event, RejectConnection):
                raise SystemExit(f"handshake refused with {event.status_code}; see the web log")


def feed_websocket(client: Client, data: bytes, now: float) -> None:
    """Server frames by hand (unmasked, unfragmented text; no extension was offered): a fraction of
    wsproto's cost, so the client side disturbs the measurement less."""
    buffer, position = client.state[0] + data, 0
    while len(buffer) - position >= 2:
        opcode, size, header = buffer[position] & 0x0F, buffer[position + 1] & 0x7F, 2
        if size == 126:
            if len(buffer) - position < 4:
                break
            size, header = int.from_bytes(buffer[position + 2:position + 4], "big"), 4
        elif size == 127:
            if len(buffer) - position < 10:
                break
            size, header = int.from_bytes(buffer[position + 2:position + 10], "big"), 10
        if len(buffer) - position < header + size:
            break
        payload = buffer[position + header:position + header + size]
        position += header + size
        if opcode == 0x1:
            client.received.append((now, payload.decode()))
        elif opcode == 0x8:
            client.closed = f"closed {int.from_bytes(payload[:2], 'big')} {payload[2:].decode(errors='replace')}"
        elif opcode == 0x9:  # the server pings every 25 s and closes a socket that does not answer
            client.sock.setblocking(True)
            client.sock.sendall(pong_frame(payload))
            client.sock.setblocking(False)
    client.state[0] = buffer[position:]


def pong_frame(payload: bytes) -> bytes:
    """A client's frames are masked (RFC 6455 5.3); a ping's payload is at most 125 bytes."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x8A, 0x80 | len(payload)]) + mask + masked


def resp_command(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded)


def parse_resp(buffer: bytes, position: int) -> tuple[Any, int] | None:
    """One RESP value from `buffer` at `position`, and where the next starts; None if incomplete."""
    end = buffer.find(b"\r\n", position)
    if end < 0:
        return None
    kind, head = buffer[position:position + 1], buffer[position + 1:end]
    if kind in (b"+", b"-", b":"):
        return head, end + 2
    if kind == b"$":
        size = int(head)
        if len(buffer) < end + 2 + size + 2:
            return None
        return buffer[end + 2:end + 2 + size], end + 4 + size
    if kind == b"*":
        items, cursor = [], end + 2
        for _ in range(int(head)):
            parsed = parse_resp(buffer, cursor)
            if parsed is None:
                return None
            items.append(parsed[0])
            cursor = parsed[1]
        return items, cursor
    raise ValueError(f"unexpected RESP type {kind!r}")


def open_subscriber(redis_host: str, redis_port: int, channel: str, session_id: str) -> Client:
    sock = socket.create_connection((redis_host, redis_port), timeout=30)
    sock.sendall(resp_command("SUBSCRIBE", channel))
    buffer = b""
    while (parsed := parse_resp(buffer, 0)) is None:
        buffer += sock.recv(1 << 16)
    return Client(session_id, sock, feed_subscriber, state=[buffer[parsed[1]:]])


def feed_subscriber(client: Client, data: bytes, now: float) -> None:
    buffer, position = client.state[0] + data, 0
    while (parsed := parse_resp(buffer, position)) is not None:
        value, position = parsed
        if isinstance(value, list) and value and value[0] == b"message":
            client.received.append((now, value[2].decode()))
    client.state[0] = buffer[position:]


# ---------------------------------------------------------------- the web process


class WebProcess:
    """`boocode web` as the product starts it (orchestrator/cli/up.py web_command: gunicorn, gthread)."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        environment = {**os.environ, **settings.to_environment()}
        with open(log, "ab") as output:
            self.process = subprocess.Popen([str(Path(sys.executable).parent / "boocode"), "web"], cwd=REPO,
                                            env=environment, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_until(self.answers, timeout=60)

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit(f"`boocode web` exited; see {self.log}")
        try:
            httpx.get(f"{self.settings.base_url}/health", timeout=2)
            return True
        except httpx.HTTPError:
            return False

    def worker_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return int(children[0])

    def usage(self) -> tuple[int, float]:
        """The gunicorn worker's threads and resident memory (MiB)."""
        status = dict(line.split(":", 1) for line in Path(f"/proc/{self.worker_pid()}/status").read_text().splitlines())
        return int(status["Threads"]), int(status["VmRSS"].split()[0]) / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU the gunicorn worker has used so far."""
        fields = Path(f"/proc/{self.worker_pid()}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(30)


# ---------------------------------------------------------------- scenarios


@dataclass
class Result:
    name: str
    delays_ms: list[float]
    missing: int
    duplicates: int
    clients_wrong: int
    frames: int = 0
    usage: dict[str, tuple[int, float]] = field(default_factory=dict)
    cpu_seconds: float = math.nan  # the web worker's, while the writer ran and the clients drained
    seconds: float = math.nan  # how long that was

    def percentile(self, fraction: float) -> float:
        if not self.delays_ms:
            return math.nan
        ordered = sorted(self.delays_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(name: str, receivers: Receivers, db: Database, publisher: TimedPublisher, session_ids: list[uuid.UUID],
            count: int, rate: float) -> Result:
    publisher.committed.clear()
    started = time.monotonic()
    receivers.thread.start()
    write(db, session_ids, count, rate)
    per_session = {str(session_id): count // len(session_ids) + (index < count % len(session_ids))
                   for index, session_id in enumerate(session_ids)}
    expected_total = sum(per_session[client.session_id] for client in receivers.clients)
    deadline = time.monotonic() + DRAIN_SECONDS
    while receivers.count() < expected_total and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a duplicate would arrive after the last expected frame
    receivers.stopping = True
    receivers.thread.join(5)
    delays, missing, duplicates, wrong = [], 0, 0, 0
    for client in receivers.clients:
        expected = {seq for (session, seq) in publisher.committed if session == client.session_id}
        seqs = []
        for received_at, frame in client.received:
            seq = json.loads(frame)["seq"]
            seqs.append(seq)
            committed = publisher.committed.get((client.session_id, seq))
            if committed is not None:
                delays.append((received_at - committed) * 1000)
        missing += len(expected - set(seqs))
        duplicates += len(seqs) - len(set(seqs))
        wrong += len(expected - set(seqs)) > 0 or seqs != sorted(seqs)
    return Result(name, delays, missing, duplicates, wrong, frames=receivers.count(),
                  seconds=time.monotonic() - started)


def run_websockets(place_settings: Settings, db: Database, publisher: TimedPublisher, tokens: list[str],
                   session_ids: list[uuid.UUID], clients: int, count: int, rate: float, log: Path) -> Result:
    threads = clients + WS_THREAD_RESERVE + 4
    settings = place_settings.replace(host="127.0.0.1", port=free_port(), web_threads=threads)
    web = WebProcess(settings, log)
    try:
        idle = web.usage()
        with db.transaction() as session:
            since = {session_id: sessions.load_session(session, session_id).last_seq for session_id in session_ids}
        receivers = Receivers()
        for index in range(clients):
            session_id = session_ids[index % len(session_ids)]
            receivers.add(open_websocket(settings.port, str(session_id), tokens[index // PER_USER], since[session_id]))
        time.sleep(1.0)  # every socket past its registration
        opened = web.usage()
        cpu_before = web.cpu_seconds()
        result = measure(f"websocket {clients} x {len(session_ids)} session(s)", receivers, db, publisher,
                         session_ids, count, rate)
        result.usage = {"idle": idle, "open": opened, "after": web.usage()}
        result.cpu_seconds = web.cpu_seconds() - cpu_before
        receivers.close()
        return result
    finally:
        web.stop()


def run_floor(settings: Settings, db: Database, publisher: TimedPublisher, session_ids: list[uuid.UUID],
              clients: int, count: int, rate: float) -> Result:
    url = httpx.URL(settings.redis_url or "")
    receivers = Receivers()
    for index in range(clients):
        session_id = session_ids[index % len(session_ids)]
        receivers.add(open_subscriber(url.host or "127.0.0.1", url.port or 6379,
                                      session_channel(settings.redis_prefix, session_id), str(session_id)))
    result = measure(f"redis floor {clients} x {len(session_ids)} session(s)", receivers, db, publisher,
                     session_ids, count, rate)
    receivers.close()
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prepare(db: Database, clients: int, session_count: int, root: Path) -> tuple[list[str], list[uuid.UUID]]:
    """A project with `session_count` sessions and one viewer (with a token) per PER_USER sockets."""
    with db.transaction() as session:
        owner = users.create_user(session, f"owner-{uuid.uuid4().hex[:6]}")
        project = projects.create_project(session, "fan-out", str(root), owner)
        session_ids = [sessions.create_session(session, project.id, f"s{index}", owner.id).id
                       for index in range(session_count)]
        tokens = []
        for _ in range(math.ceil(clients / PER_USER)):
            viewer = users.create_user(session, f"viewer-{uuid.uuid4().hex[:8]}")
            projects.set_member(session, project.id, viewer.id, Role.VIEWER)
            tokens.append(users.create_token(session, viewer.id, "bench")[1])
    return tokens, session_ids


def report(pairs: list[tuple[Result, Result]], count: int, rate: float) -> None:
    print(f"\n{count} events per scenario at {rate:g}/s, round-robin over the scenario's sessions; "
          "delays from publish (right after commit) to receipt, in ms")
    print(f"missing: not received {DRAIN_SECONDS:g} s after the last commit; wrong: clients with a gap or out of order")
    print(f"{'scenario':34} {'p50':>7} {'p99':>7} {'max':>7} {'missing':>8} {'dup':>5} {'wrong':>6}")
    for ours, floor in pairs:
        for result in (ours, floor):
            print(f"{result.name:34} {result.percentile(0.5):7.1f} {result.percentile(0.99):7.1f} "
                  f"{max(result.delays_ms, default=math.nan):7.1f} {result.missing:8} {result.duplicates:5} "
                  f"{result.clients_wrong:6}")
        print(f"{'  ratio p50 / p99 to the floor':34} {ours.percentile(0.5) / floor.percentile(0.5):7.2f} "
              f"{ours.percentile(0.99) / floor.percentile(0.99):7.2f}")
    print("\nweb process (the gunicorn worker): CPU per frame sent, threads and RSS")
    for ours, _ in pairs:
        print(f"{ours.name:34} {ours.frames:7} frames in {ours.seconds:5.1f} s: {ours.cpu_seconds:6.2f} CPU s "
              f"({ours.cpu_seconds / ours.seconds:4.0%} of a core), "
              f"{ours.cpu_seconds / max(1, ours.frames) * 1e6:6.1f} us "
              "per frame (idle costs included)")
    print(f"{'scenario':34} {'idle':>17} {'sockets open':>17} {'after the run':>17} {'per socket':>19}")
    for ours, _ in pairs:
        clients = int(ours.name.split()[1])
        (idle_threads, idle_rss), (open_threads, open_rss), (after_threads, after_rss) = (
            ours.usage["idle"], ours.usage["open"], ours.usage["after"])
        print(f"{ours.name:34} {idle_threads:5} {idle_rss:7.1f} MiB {open_threads:5} {open_rss:7.1f} MiB "
              f"{after_threads:5} {after_rss:7.1f} MiB {(open_threads - idle_threads) / clients:5.1f} thr "
              f"{(open_rss - idle_rss) * 1024 / clients:6.0f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="100,500")
    parser.add_argument("--sessions", default="1,50")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="events a second, over all sessions")
    arguments = parser.parse_args()
    client_counts = [int(value) for value in arguments.clients.split(",")]
    session_counts = [int(value) for value in arguments.sessions.split(",")]
    log = Path(tempfile.gettempdir()) / f"ws_fanout-web-{os.getpid()}.log"
    with scratch() as place, tempfile.TemporaryDirectory() as root:
        publisher = TimedPublisher(RedisPublisher(place.redis, place.settings.redis_prefix))
        db = Database(place.settings.database_url or "", publisher)
        pairs = []
        for clients in client_counts:
            for session_count in session_counts:
                tokens, session_ids = prepare(db, clients, session_count, Path(root))
                print(f"{clients} clients on {session_count} session(s)…", flush=True)
                ours = run_websockets(place.settings, db, publisher, tokens, session_ids, clients,
                                      arguments.events, arguments.rate, log)
                floor = run_floor(place.settings, db, publisher, session_ids, clients, arguments.events,
                                  arguments.rate)
                pairs.append((ours, floor))
        db.dispose()
    report(pairs, arguments.events, arguments.rate)
    print(f"\nweb log: {log}; machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
