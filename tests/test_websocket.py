"""WebSocket replay: no gap and no duplicate across disconnects, lost pub/sub messages and the hand-over."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import uuid

import httpx
import simple_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from orchestrator.store import events
from orchestrator.store.database import Database
from orchestrator.tracing.publisher import session_channel
from tests.support import Api, collect_frames, wait_for


def all_events(api: Api, session_id: str) -> list[dict]:
    found, since = [], 0
    while True:
        page = api.ok("GET", f"/api/sessions/{session_id}/events?since={since}&limit=500")["events"]
        if not page:
            return found
        found.extend(page)
        since = page[-1]["seq"]


def read_until_run_finished(socket, run_id: str, into: list[dict], limit: int | None = None) -> bool:  # type: ignore[no-untyped-def]
    """Append frames to `into`; True once the run's run.finished arrived, False after `limit` frames."""
    count = 0
    while limit is None or count < limit:
        frame = socket.receive(timeout=30)
        assert frame is not None, "stream stalled"
        event = json.loads(frame)
        into.append(event)
        count += 1
        if event["type"] == "run.finished" and event["run_id"] == run_id:
            return True
    return False


def test_a_thousand_events_survive_random_disconnects(api: Api, chat: dict, worker) -> None:  # type: ignore[no-untyped-def]
    steady: list[dict] = []
    steady_socket = api.websocket(chat["id"])
    run = api.ok("POST", f"/api/sessions/{chat['id']}/probes", {"steps": 500, "step_seconds": 0.002})["run"]

    steady_thread = threading.Thread(target=read_until_run_finished, args=(steady_socket, run["id"], steady))
    steady_thread.start()

    rng = random.Random(20261124)
    flaky: list[dict] = []
    reconnects = 0
    while True:
        since = flaky[-1]["seq"] if flaky else 0
        socket = api.websocket(chat["id"], since=since, subprotocol_token=rng.random() < 0.5)
        try:
            finished = read_until_run_finished(socket, run["id"], flaky, limit=rng.randint(1, 120))
        finally:
            socket.close()
        if finished:
            break
        reconnects += 1
        time.sleep(rng.uniform(0, 0.15))  # offline while the worker keeps producing
    steady_thread.join(60)
    steady_socket.close()

    stored = all_events(api, chat["id"])
    assert len(stored) >= 1000
    assert [event["seq"] for event in stored] == list(range(1, len(stored) + 1))  # gap-free in Postgres
    assert reconnects >= 5
    assert flaky == stored
    assert steady == stored


def test_replay_then_live_handover_has_no_gap_or_duplicate(api: Api, chat: dict, db: Database) -> None:
    """Events keep committing while a client replays a long backlog: the hand-over is exact."""
    session_id = uuid.UUID(chat["id"])
    for index in range(600):
        with db.transaction() as session:
            events.append_event(session, session_id, "test.backlog", {"index": index})
    stop = threading.Event()

    def produce() -> None:
        index = 0
        while not stop.is_set():
            with db.transaction() as session:
                events.append_event(session, session_id, "test.live", {"index": index})
            index += 1

    producer = threading.Thread(target=produce)
    producer.start()
    socket = api.websocket(chat["id"])
    try:
        frames = collect_frames(socket, 1500, timeout=60)
    finally:
        stop.set()
        producer.join()
        socket.close()
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(1, 1501))
    stored = {event["seq"]: event for event in all_events(api, chat["id"])}
    assert all(frame == stored[frame["seq"]] for frame in frames)


def test_a_lost_pubsub_message_is_filled_from_postgres(api: Api, chat: dict, settings) -> None:  # type: ignore[no-untyped-def]
    """Commit without publishing (the declared seam: a Database with no publisher), then publish a later event."""
    from orchestrator import services

    silent = Database(settings.database_url)  # NullPublisher: like a publish that never reached Redis
    loud = services.make_database(settings)
    session_id = uuid.UUID(chat["id"])
    socket = api.websocket(chat["id"])
    try:
        backlog = collect_frames(socket, 1)
        with silent.transaction() as session:
            events.append_event(session, session_id, "test.lost", {"n": 1})
            events.append_event(session, session_id, "test.lost", {"n": 2})
        with loud.transaction() as session:
            events.append_event(session, session_id, "test.published", {"n": 3})
        frames = collect_frames(socket, 3, timeout=10)
        assert [frame["type"] for frame in frames] == ["test.lost", "test.lost", "test.published"]
        assert [frame["seq"] for frame in frames] == [backlog[0]["seq"] + offset for offset in (1, 2, 3)]
        # a lost message with nothing after it arrives through the quiet-time poll
        with silent.transaction() as session:
            events.append_event(session, session_id, "test.lost", {"n": 4})
        [last] = collect_frames(socket, 1, timeout=10)
        assert last["data"] == {"n": 4}
    finally:
        socket.close()
        silent.dispose()
        loud.dispose()


def test_since_beyond_the_end_waits_for_new_events(api: Api, chat: dict, db: Database) -> None:
    stored = all_events(api, chat["id"])
    socket = api.websocket(chat["id"], since=stored[-1]["seq"])
    try:
        assert socket.receive(timeout=1) is None
        with db.transaction() as session:
            events.append_event(session, uuid.UUID(chat["id"]), "test.after", {})
        [frame] = collect_frames(socket, 1)
        assert frame["seq"] == stored[-1]["seq"] + 1
    finally:
        socket.close()


def test_bad_since_is_refused_before_the_handshake(api: Api, chat: dict) -> None:
    try:
        api.websocket(chat["id"], since="abc")  # type: ignore[arg-type]
    except simple_websocket.ConnectionError as error:
        assert error.status_code == 422
    else:
        raise AssertionError("the handshake should have been refused")


def test_the_sockets_of_a_session_share_one_redis_subscription_and_each_gets_every_event(
        api: Api, chat: dict, db: Database, settings) -> None:  # type: ignore[no-untyped-def]
    from orchestrator import services

    client = services.make_redis(settings)
    channel = session_channel(settings.redis_prefix, chat["id"])
    sockets = [api.websocket(chat["id"], subprotocol_token=index % 2 == 1) for index in range(6)]
    try:
        for socket in sockets:
            collect_frames(socket, 1)  # session.created, replayed
        assert client.pubsub_numsub(channel) == [(channel.encode(), 1)]  # one per web process, not per socket
        for index in range(50):
            with db.transaction() as session:
                events.append_event(session, uuid.UUID(chat["id"]), "test.fanout", {"index": index})
        stored = all_events(api, chat["id"])
        for socket in sockets:
            assert collect_frames(socket, 50) == stored[1:]
    finally:
        for socket in sockets:
            socket.close()
    wait_for(lambda: client.pubsub_numsub(channel) == [(channel.encode(), 0)], timeout=10,
             message="the last socket leaving to unsubscribe the channel")


def test_a_client_that_stops_reading_still_gets_every_event_once_in_order_and_so_do_the_others(
        api: Api, chat: dict, db: Database) -> None:
    """The hub sends live events itself only while a client's socket can take them; once the stalled
    client's socket is full its events wait for its own thread (web/livehub.py Mailbox)."""
    stalled = RawSocket(api, chat["id"])  # reads nothing until the end
    steady = api.websocket(chat["id"])
    try:
        collect_frames(steady, 1)
        count = 300  # ~4.5 MB: more than a socket with a 4 KB receive buffer takes in (about 3 MB here)
        for index in range(count):
            with db.transaction() as session:
                events.append_event(session, uuid.UUID(chat["id"]), "test.bulk", {"index": index, "text": "x" * 15000})
        assert [frame["data"]["index"] for frame in collect_frames(steady, count, timeout=60)] == list(range(count))
        stored = all_events(api, chat["id"])
        assert stalled.read_frames(len(stored), timeout=60) == stored
    finally:
        steady.close()
        stalled.close()


class RawSocket:
    """A WebSocket client over a plain socket with a small receive buffer, read only when asked
    (simple-websocket's client reads in a thread of its own, so it never leaves its socket full)."""

    def __init__(self, api: Api, session_id: str) -> None:
        url = httpx.URL(api.url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((url.host, url.port))
        self.connection = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.connection.send(Request(
            host=f"{url.host}:{url.port}", target=f"/ws/sessions/{session_id}?since=0",
            extra_headers=[(b"authorization", f"Bearer {api.token}".encode())])))
        self.frames: list[dict] = []
        self.partial = ""
        self.accepted = False
        while not self.accepted:
            self.read_some()

    def read_some(self) -> None:
        self.connection.receive_data(self.sock.recv(1 << 16))
        for event in self.connection.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, TextMessage):
                self.partial += event.data
                if event.message_finished:
                    self.frames.append(json.loads(self.partial))
                    self.partial = ""

    def read_frames(self, count: int, timeout: float) -> list[dict]:
        self.sock.settimeout(timeout)
        while len(self.frames) < count:
            self.read_some()
        return self.frames

    def close(self) -> None:
        self.sock.close()
