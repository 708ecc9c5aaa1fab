"""Opening a big session against a small one, through the HTTP API of a real `boocode web` process.

    .venv/bin/python -m bench.big_session [--messages 10000] [--baseline 100] [--events-per-message 10]
                                          [--repeat 20]

Baseline: a session of `--baseline` messages. Ours: one of `--messages` messages. Each has
`--events-per-message` events per message (10,000 x 10 = 100,000 events), a chat run per 4 messages,
a turn and a model-call span per run, and 1 message in 100 from a workflow's child agents (which the
conversation leaves out). Each sits in a project of its own beside the same number of empty sessions.

For each, the median over `--repeat` of what opening it asks for: the latest page of messages (what
the UI fetches), a replay of the last 100 events (REST and WebSocket), and the project's session list;
then, for reference, the trace summary, the first span page, every span the timeline reads and every
message (what the UI fetched before it paged). Prints figures, the ratio big / small, and EXPLAIN
(ANALYZE) summaries of the queries behind the bounded reads. Asserts nothing.

`seed_session` (one INSERT ... SELECT generate_series per table) and `explain_queries` are shared
with tests/test_big_session.py, which checks the plans.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from bench.common import scratch
from orchestrator import services
from orchestrator.settings import Settings
from orchestrator.store import events, projects, sessions, spans, users
from orchestrator.store.database import Database
from tests.support import Api, WebProcess

BIG_TABLES = {"messages", "events", "runs", "spans"}
FIRST_PAGE = 120  # what the web UI's chat fetches first (web/static/js/chat.js WINDOW)
REPLAY = 100      # events replayed from a recent seq
RECENT_RUNS = 50  # chat runs whose turns the timeline shows at first (web/static/js/timeline.js)
SOCKET_SETTLE = 0.5  # seconds: > BOOCODE_WS_POLL_SECONDS below, so closed sockets do not pile up to the cap


def seed_session(session: Session, project_id: uuid.UUID, user_id: uuid.UUID, messages: int,
                 events_per_message: int = 10) -> uuid.UUID:
    """A session of `messages` messages and `messages x events_per_message` events in a handful of
    set-based INSERTs. Message g (from 0) has seq (g + 1) x events_per_message, the seq of its
    `message.created` event; it belongs to chat run g // 4 (user, then 3 assistant messages), except
    every 100th (g % 100 == 50), which belongs to a child run of one workflow run. The newest chat
    run is `waiting`, the others `completed`."""
    chat = sessions.create_session(session, project_id, f"{messages} messages", user_id)
    events.write_pending(session)  # its `session.created` takes seq 1 now, before the rows below
    chat_runs = (messages + 3) // 4
    values = {"session": chat.id, "project": project_id, "user": user_id, "messages": messages,
              "runs": chat_runs, "children": max(1, messages // 100), "per": events_per_message,
              "events": messages * events_per_message}
    statements = [
        # chat runs, one a second; a workflow run and its child agents after them
        """INSERT INTO runs (id, project_id, session_id, kind, status, input, created_by, created_at, updated_at)
           SELECT gen_random_uuid(), :project, :session, 'agent',
                  CASE WHEN n = :runs - 1 THEN 'waiting' ELSE 'completed' END, jsonb_build_object('n', n), :user,
                  now() - interval '1 day' + n * interval '1 second', now()
           FROM generate_series(0, :runs - 1) AS n""",
        """INSERT INTO runs (id, project_id, session_id, kind, status, input, created_by, created_at, updated_at)
           VALUES (gen_random_uuid(), :project, :session, 'workflow', 'completed', '{"workflow": true}', :user,
                   now() - interval '1 day', now())""",
        """INSERT INTO runs (id, project_id, session_id, parent_id, kind, status, input, created_by, created_at,
                             updated_at)
           SELECT gen_random_uuid(), :project, :session, w.id, 'agent', 'failed', jsonb_build_object('child', n),
                  :user, now(), now()
           FROM generate_series(0, :children - 1) AS n
           JOIN runs w ON w.session_id = :session AND w.input ? 'workflow'""",
        """INSERT INTO messages (id, session_id, run_id, role, parts, seq, created_by, created_at)
           SELECT gen_random_uuid(), :session, r.id, CASE WHEN g % 4 = 0 THEN 'user' ELSE 'assistant' END,
                  jsonb_build_array(jsonb_build_object('type', 'text', 'text',
                                    'message ' || g || ': the agent read the file and explained it')),
                  (g + 1) * CAST(:per AS bigint), :user, now()
           FROM generate_series(0, :messages - 1) AS g
           JOIN runs r ON r.session_id = :session AND r.input = CASE WHEN g % 100 = 50
                THEN jsonb_build_object('child', (g / 100) % :children) ELSE jsonb_build_object('n', g / 4) END""",
        """INSERT INTO events (session_id, seq, type, run_id, data, created_at)
           SELECT :session, s, CASE WHEN s % :per = 0 THEN 'message.created' ELSE 'text.delta' END, NULL,
                  jsonb_build_object('text', 'token ' || s), now()
           FROM generate_series(2, CAST(:events AS bigint)) AS s""",
        """INSERT INTO spans (id, session_id, run_id, kind, name, status, turn, attempt, started_at, ended_at,
                              duration_ms, attributes)
           SELECT gen_random_uuid(), :session, r.id, k.kind, k.kind, 'ok', 0, 1, r.created_at, r.created_at, 5,
                  CASE WHEN k.kind = 'model_call' THEN '{"model": "fake", "usage": {"input_total": 100, "output": 10,
                       "cache_read": 50, "uncached": 50}, "cost": {"total": 0.0001}}'::jsonb ELSE '{}'::jsonb END
           FROM runs r CROSS JOIN (VALUES ('turn'), ('model_call')) AS k(kind)
           WHERE r.session_id = :session AND r.parent_id IS NULL AND r.kind = 'agent'
           ORDER BY r.created_at, k.kind DESC""",
        "UPDATE sessions SET last_seq = :events, updated_at = now() WHERE id = :session",
    ]
    for statement in statements:
        session.execute(text(statement), values)
    return chat.id


def vacuum(database: Database) -> None:
    """Statistics and the visibility map as a long-lived server has them (autovacuum's job), so the
    planner sees the tables' real sizes and index-only scans need no heap visits."""
    with database.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM ANALYZE messages, events, runs, spans, sessions")


@contextmanager
def recorded(database: Database) -> Iterator[list[tuple[str, Any]]]:
    """Every statement the engine sends while inside, with its parameters (SQLAlchemy's event API)."""
    statements: list[tuple[str, Any]] = []

    def record(_connection: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        statements.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


def explain_queries(database: Database, read: Callable[[Session], Any], *, analyze: bool = True) -> list[dict]:
    """The plans (EXPLAIN FORMAT JSON, with ANALYZE: actual rows too) of the statements `read` sends
    through the store's real code, each as {"sql", "plan", "nodes"}."""
    with recorded(database) as statements, database.transaction() as session:
        read(session)
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    plans = []
    with database.engine.connect() as connection:
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            document = connection.exec_driver_sql(f"EXPLAIN ({options}) {statement}", parameters).scalar_one()
            plans.append({"sql": statement, "plan": document[0], "nodes": list(plan_nodes(document[0]["Plan"]))})
        connection.rollback()
    return plans


def plan_nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def seq_scans(plan: dict) -> set[str]:
    """The big tables a plan reads whole."""
    return {node["Relation Name"] for node in plan["nodes"]
            if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in BIG_TABLES}


def indexes(plan: dict) -> set[str]:
    return {node["Index Name"] for node in plan["nodes"] if "Index Name" in node}


def summary_line(plan: dict) -> str:
    scans = [f"{node['Node Type']} {node.get('Index Name') or node.get('Relation Name')} "
             f"rows={node.get('Actual Rows', '?')}x{node.get('Actual Loops', 1)}"
             for node in plan["nodes"] if "Relation Name" in node]
    return f"{plan['plan'].get('Execution Time', 0):.2f} ms: " + "; ".join(scans)


# ------------------------------------------------------------------ the benchmark


def medians_ms(calls: dict[int, Callable[[], Any]], repeat: int) -> dict[int, float]:
    """The median time of each call, taking turns (small, big, small, big…) so that a busy machine
    slows both alike; each is called once first to warm connections and caches. A call that times
    itself (to leave out a pause after it) returns its own milliseconds."""
    times: dict[int, list[float]] = {size: [] for size in calls}
    for call in calls.values():
        call()
    for _ in range(repeat):
        for size, call in calls.items():
            started = time.perf_counter()
            own = call()
            times[size].append(own if isinstance(own, float) else (time.perf_counter() - started) * 1000)
    return {size: statistics.median(values) for size, values in times.items()}


def session_operations(client: httpx.Client, api: Any, chat: dict, project_id: str) -> dict[str, Callable[[], Any]]:
    """What opening a session asks for: the bounded reads, then (starred) those that grow with it."""
    base, last = f"/api/sessions/{chat['id']}", chat["last_seq"]

    def get(path: str) -> Any:
        response = client.get(path)
        response.raise_for_status()
        return response.json()

    def replay_socket() -> float:
        started = time.perf_counter()
        socket = api.websocket(chat["id"], since=last - REPLAY)
        try:
            for _ in range(REPLAY):
                socket.receive(timeout=10)
            return (time.perf_counter() - started) * 1000
        finally:
            socket.close()
            time.sleep(SOCKET_SETTLE)  # the server frees the socket's slot when it notices the close

    def every_span(kind: str, cursor: int = 0) -> None:  # keyset pages from `cursor` to the end
        while cursor is not None:
            cursor = get(f"{base}/spans?kind={kind}&limit=200&cursor={cursor}")["next_cursor"]

    def timeline() -> None:  # as web/static/js/timeline.js opens: the newest RECENT_RUNS chat runs' spans
        runs = [run for run in get(f"{base}/runs?limit=500")["runs"] if run["kind"] == "agent" and not run["parent_id"]]
        start = 0
        if len(runs) > RECENT_RUNS:
            first = get(f"/api/runs/{runs[RECENT_RUNS - 1]['id']}/spans?limit=1")["spans"]
            start = first[0]["position"] - 1 if first else 0
        for kind in ("turn", "model_call", "tool_call"):
            every_span(kind, start)

    def every_message() -> None:  # as the chat read them before it paged
        after, full = 0, True
        while full:
            found = get(f"{base}/messages?after={after}&limit=500")["messages"]
            after, full = (found[-1]["seq"] if found else after), len(found) == 500

    return {
        "latest message page": lambda: get(f"{base}/messages?before={last + 1}&limit={FIRST_PAGE}&count=earlier"),
        "  the same, no count": lambda: get(f"{base}/messages?before={last + 1}&limit={FIRST_PAGE}"),
        "replay (REST)": lambda: get(f"{base}/events?since={last - REPLAY}&limit=500"),
        "replay (WebSocket)": replay_socket,
        "session list": lambda: get(f"/api/projects/{project_id}/sessions"),
        "timeline (newest 50 runs)": timeline,
        "trace summary*": lambda: get(f"{base}/trace-summary"),
        "first span page": lambda: get(f"{base}/spans?kind=model_call&limit=200"),
        "timeline, every span*": lambda: [every_span(kind) for kind in ("turn", "model_call", "tool_call")],
        "every message (old UI)*": every_message,
    }


def explain_report(database: Database, chat_id: uuid.UUID, project_id: uuid.UUID, last_seq: int) -> None:
    reads = {
        "latest page": lambda s: sessions.list_messages(s, chat_id, before_seq=last_seq + 1, limit=FIRST_PAGE),
        "earlier count": lambda s: sessions.count_messages_before(s, chat_id, last_seq + 1),
        "replay": lambda s: events.list_events(s, chat_id, after_seq=last_seq - REPLAY, limit=500),
        "session list": lambda s: sessions.activity(s, [c.id for c in sessions.list_sessions(s, project_id)]),
        "span page": lambda s: spans.list_spans(s, session_id=chat_id, kind="model_call", limit=200),
        "trace summary*": lambda s: spans.summarize(s, session_id=chat_id),
    }
    for name, read in reads.items():
        for plan in explain_queries(database, read):
            print(f"    {name:<16} {summary_line(plan)}")


def fill_project(database: Database, owner_id: uuid.UUID, messages: int, per: int, others: int) -> tuple[str, str]:
    with database.transaction() as session:
        owner = users.load_user(session, owner_id)
        project = projects.create_project(session, f"bench {messages}", tempfile.gettempdir(), owner)
        for index in range(others):
            sessions.create_session(session, project.id, f"empty {index}", owner_id)
        chat_id = seed_session(session, project.id, owner_id, messages, per)
    return str(project.id), str(chat_id)


def measure(settings: Settings, token: str, seeded: dict[int, tuple[str, str]],
            repeat: int) -> dict[str, dict[int, float]]:
    """Median milliseconds of each operation for each seeded session, through a `boocode web` process."""
    with tempfile.TemporaryDirectory() as logs:
        web = WebProcess(settings, Path(logs)).start()
        try:
            api = Api(web.url, token)
            with httpx.Client(base_url=web.url, headers=api.headers(), timeout=60) as client:
                chats = {size: api.ok("GET", f"/api/sessions/{chat_id}")["session"]
                         for size, (_, chat_id) in seeded.items()}
                operations = {size: session_operations(client, api, chats[size], project_id)
                              for size, (project_id, _) in seeded.items()}
                names = next(iter(operations.values()))
                return {name: medians_ms({size: operations[size][name] for size in seeded}, repeat) for name in names}
        finally:
            web.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--baseline", type=int, default=100)
    parser.add_argument("--events-per-message", type=int, default=10)
    parser.add_argument("--others", type=int, default=20, help="empty sessions beside each seeded one")
    parser.add_argument("--repeat", type=int, default=20)
    arguments = parser.parse_args()
    small, big = arguments.baseline, arguments.messages
    with scratch(BOOCODE_WS_POLL_SECONDS="0.2", BOOCODE_WS_MAX_PER_USER="100") as space:
        database = services.make_database(space.settings)
        with database.transaction() as session:
            owner = users.create_user(session, "bench", is_admin=True)
            _, token = users.create_token(session, owner.id, "bench")
            owner_id = owner.id
        started = time.perf_counter()
        seeded = {size: fill_project(database, owner_id, size, arguments.events_per_message, arguments.others)
                  for size in (small, big)}
        vacuum(database)
        print(f"seeded {big} + {small} messages (x{arguments.events_per_message} events) "
              f"in {time.perf_counter() - started:.1f} s")
        figures = measure(space.settings, token, seeded, arguments.repeat)
        print(f"\nmedian of {arguments.repeat}, ms     {small:>8} msgs {big:>8} msgs   ratio")
        for name, by_size in figures.items():
            print(f"  {name:<26} {by_size[small]:>12.2f} {by_size[big]:>13.2f} {by_size[big] / by_size[small]:>7.2f}x")
        print("  (* reads that grow with the session; listed for reference)")
        for size, (project_id, chat_id) in seeded.items():
            with database.transaction() as session:
                last_seq = sessions.load_session(session, uuid.UUID(chat_id)).last_seq
            print(f"\nEXPLAIN ANALYZE, {size} messages:")
            explain_report(database, uuid.UUID(chat_id), uuid.UUID(project_id), last_seq)
        database.dispose()


if __name__ == "__main__":
    main()
