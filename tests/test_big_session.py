"""A session of 10,000 messages and 100,000 events opens by reading pages, not the session: the plans
of the latest message page, the earlier-messages count, a replay from a recent seq, the session list
and a span page use their indexes (no Seq Scan on a big table) and read about a page of rows; and
paging back and forth through the conversation gives every message once, in order.

One database for the module, seeded with set-based INSERTs (bench/big_session.py `seed_session`):
the big session and, older, another project's session of the same size; vacuumed as autovacuum
would, and served by a live web server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bench.big_session import explain_queries, indexes, seed_session, seq_scans, vacuum
from orchestrator import migrate, services
from orchestrator.settings import load_settings
from orchestrator.store import events, projects, sessions, spans, users
from tests.conftest import create_database, drop_database
from tests.support import Api, LiveServer

MESSAGES, EVENTS_PER_MESSAGE, PAGE = 10_000, 10, 120


@dataclass
class Site:
    database: Any
    api: Api
    project_id: uuid.UUID
    chat_id: uuid.UUID
    last_seq: int

    def plans(self, read: Callable[[Any], Any]) -> list[dict]:
        return explain_queries(self.database, read)


@pytest.fixture(scope="module")
def site(admin_postgres_url: str, server_urls: tuple[str, str], scratch_dir: Path) -> Iterator[Site]:
    from web.app import create_app

    name = f"boocode_big_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_postgres_url, name)
    try:
        migrate.upgrade(url)
        settings = load_settings(environ={}, database_url=url, redis_url=server_urls[1],
                                 redis_prefix=f"bct-big-{name[-8:]}", data_dir=scratch_dir / "data")
        database = services.make_database(settings)
        with database.transaction() as session:
            owner = users.create_user(session, "owner", is_admin=True)
            _, token = users.create_token(session, owner.id, "tests")
            # the server holds older work too, as any server does: another project's session of the
            # same size, written before the big one (a plan that scanned from the oldest row would show)
            elsewhere = projects.create_project(session, "elsewhere", str(scratch_dir), owner)
            seed_session(session, elsewhere.id, owner.id, MESSAGES, 1)
            project = projects.create_project(session, "big", str(scratch_dir), owner)
            for index in range(20):  # the session list shows more than the big one
                sessions.create_session(session, project.id, f"other {index}", owner.id)
            chat_id = seed_session(session, project.id, owner.id, MESSAGES, EVENTS_PER_MESSAGE)
            project_id = project.id
        vacuum(database)
        server = LiveServer(create_app(settings)).start()
        try:
            yield Site(database, Api(server.url, token), project_id, chat_id, MESSAGES * EVENTS_PER_MESSAGE)
        finally:
            server.stop()
            database.dispose()
    finally:
        drop_database(admin_postgres_url, name)


def only_plan(plans: list[dict]) -> dict:
    assert len(plans) == 1, [plan["sql"] for plan in plans]
    return plans[0]


def rows_read(plan: dict, relation: str) -> int:
    """Rows a plan took from a table: those it returned plus those it read and filtered out."""
    return sum((node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * node.get("Actual Loops", 1)
               for node in plan["nodes"] if node.get("Relation Name") == relation)


def test_the_latest_page_of_messages_reads_a_page_from_its_index(site: Site) -> None:
    plan = only_plan(site.plans(lambda s: sessions.list_messages(s, site.chat_id, before_seq=site.last_seq + 1,
                                                                 limit=PAGE)))
    assert seq_scans(plan) == set()
    assert {"ix_messages_session_seq_run", "ix_runs_session_children"} <= indexes(plan)
    # 1 message in 100 is a workflow agent's, read and left out: about a page, not 10,000
    assert PAGE <= rows_read(plan, "messages") <= PAGE + 5


def test_the_earlier_count_is_an_index_only_scan(site: Site) -> None:
    plan = only_plan(site.plans(lambda s: sessions.count_messages_before(s, site.chat_id, site.last_seq + 1)))
    assert seq_scans(plan) == set()
    assert any(node["Node Type"] == "Index Only Scan" and node["Index Name"] == "ix_messages_session_seq_run"
               for node in plan["nodes"])


def test_a_replay_from_a_recent_seq_reads_only_the_gap(site: Site) -> None:
    plan = only_plan(site.plans(lambda s: events.list_events(s, site.chat_id, after_seq=site.last_seq - 100,
                                                             limit=500)))
    assert seq_scans(plan) == set()
    assert "uq_events_session_seq" in indexes(plan)
    assert rows_read(plan, "events") == 100


def test_the_session_list_reads_one_run_per_session(site: Site) -> None:
    plans = site.plans(lambda s: sessions.activity(s, [chat.id for chat in sessions.list_sessions(s, site.project_id)]))
    assert len(plans) == 2 and all(seq_scans(plan) == set() for plan in plans)
    activity = plans[1]
    assert "ix_runs_session_chat" in indexes(activity)
    assert rows_read(activity, "runs") <= 21  # the big session's latest run; the 20 others have none
    listed = {chat["id"]: chat["activity"]
              for chat in site.api.ok("GET", f"/api/projects/{site.project_id}/sessions")["sessions"]}
    # its newest chat run waits (a workflow's failed agent, newer still, does not count)
    assert listed[str(site.chat_id)] == "waiting" and set(listed.values()) == {"waiting", "idle"}


def test_a_page_of_spans_stops_after_the_page(site: Site) -> None:
    plan = only_plan(site.plans(lambda s: spans.list_spans(s, session_id=site.chat_id, kind="model_call", limit=200)))
    assert seq_scans(plan) == set()
    # read in position order and cut at the page: never a sort of the session's spans. (Which index
    # gives that order is the planner's choice: here, where this session holds half of all spans, it
    # takes `spans_position_key` and skips the older session's spans; see docs/web-ui.md.)
    assert plan["nodes"][0]["Node Type"] == "Limit" and not any(node["Node Type"] == "Sort" for node in plan["nodes"])
    assert indexes(plan) & {"ix_spans_session_position", "spans_position_key"}


def expected_seqs() -> list[int]:
    """The conversation as seeded: message g has seq (g + 1) x 10; every 100th (g % 100 == 50) is a
    workflow agent's and is left out."""
    return [(g + 1) * EVENTS_PER_MESSAGE for g in range(MESSAGES) if g % 100 != 50]


def test_paging_back_from_the_newest_gives_every_message_once_in_order(site: Site) -> None:
    path = f"/api/sessions/{site.chat_id}/messages"
    first = site.api.ok("GET", f"{path}?before={site.last_seq + 1}&limit={PAGE}&count=earlier")
    assert first["earlier"] == len(expected_seqs()) - PAGE
    pages, before = [first["messages"]], first["next_before"]
    while before is not None:
        page = site.api.ok("GET", f"{path}?before={before}&limit=500")
        pages.append(page["messages"])
        before = page["next_before"]
    for page in pages:
        assert [message["seq"] for message in page] == sorted(message["seq"] for message in page)
    seqs = [message["seq"] for page in reversed(pages) for message in page]
    assert seqs == expected_seqs()
    assert len({message["id"] for page in pages for message in page}) == len(seqs)
    assert [len(page) for page in pages[1:-1]] == [500] * (len(pages) - 2)  # full pages until the start
    # the last page backwards is short and says so; the first forwards page is the same messages
    forwards = site.api.ok("GET", f"{path}?after=0&limit=500")["messages"]
    assert [message["seq"] for message in forwards] == expected_seqs()[:500]


def test_a_page_between_two_seqs_and_the_page_size_cap(site: Site) -> None:
    path = f"/api/sessions/{site.chat_id}/messages"
    page = site.api.ok("GET", f"{path}?after=1000&before=2001&limit=500")
    assert [message["seq"] for message in page["messages"]] == [seq for seq in expected_seqs() if 1000 < seq < 2001]
    assert page["next_before"] is None  # fewer than a page lie between them
    assert site.api.get(f"{path}?before=10&limit=501").status_code == 422
    assert site.api.get(f"{path}?count=all").status_code == 422
    assert site.api.ok("GET", f"{path}?before=1&count=earlier") == {"messages": [], "next_before": None, "earlier": 0}
