"""Leases: exactly one claimant wins a race; a stale epoch's writes are refused and leave no trace."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from orchestrator.errors import StaleLeaseError
from orchestrator.store import journal, runs
from orchestrator.store.database import Database
from orchestrator.store.models import Event, Run, Step
from tests.conftest import new_session


def create_probe_run(db: Database, chat: dict) -> uuid.UUID:
    with db.transaction() as session:
        run = runs.create_run(session, project_id=uuid.UUID(chat["project_id"]), session_id=uuid.UUID(chat["id"]),
                              kind="probe", input={"steps": 1, "step_seconds": 0}, created_by=None)
        return run.id


def race(db: Database, run_id: uuid.UUID, contenders: int, lease_seconds: float = 60.0) -> list[runs.Lease]:
    barrier = threading.Barrier(contenders)

    def contend(index: int) -> runs.Lease | None:
        barrier.wait()
        with db.transaction() as session:
            return runs.claim_run(session, run_id, f"contender-{index}", lease_seconds)

    with ThreadPoolExecutor(contenders) as pool:
        return [lease for lease in pool.map(contend, range(contenders)) if lease is not None]


def expire_lease(db: Database, run_id: uuid.UUID) -> None:
    """Stand-in for the lease running out: move its expiry into the past."""
    with db.transaction() as session:
        session.execute(update(Run).where(Run.id == run_id)
                        .values(lease_expires_at=func.now() - text("interval '1 second'")))


@pytest.fixture
def isolated(make_stack, tmp_path: Path):  # type: ignore[no-untyped-def]
    stack = make_stack()
    return stack, new_session(stack.api, tmp_path / "root")


def test_racing_claimants_exactly_one_epoch_wins(isolated) -> None:  # type: ignore[no-untyped-def]
    stack, chat = isolated
    for _ in range(10):
        run_id = create_probe_run(stack.db, chat)
        winners = race(stack.db, run_id, contenders=8)
        assert len(winners) == 1
        assert winners[0].epoch == 1
        expire_lease(stack.db, run_id)
        takeover = race(stack.db, run_id, contenders=8)
        assert len(takeover) == 1
        assert takeover[0].epoch == 2
        with stack.db.transaction() as session:
            run = session.get(Run, run_id)
            assert (run.lease_owner, run.lease_epoch, run.claims) == (takeover[0].owner, 2, 2)


def test_a_stale_epoch_is_refused_and_leaves_no_trace(isolated) -> None:  # type: ignore[no-untyped-def]
    stack, chat = isolated
    run_id = create_probe_run(stack.db, chat)
    [stale] = race(stack.db, run_id, contenders=1)
    with stack.db.transaction() as session:
        journal.begin_step(session, stale, "before-takeover", kind="test")
    expire_lease(stack.db, run_id)
    [current] = race(stack.db, run_id, contenders=1)
    assert current.epoch == stale.epoch + 1

    def counts() -> tuple[int, int, str]:
        with stack.db.transaction() as session:
            steps = session.scalar(select(func.count()).select_from(Step).where(Step.run_id == run_id))
            step_events = session.scalar(select(func.count()).select_from(Event)
                                         .where(Event.run_id == run_id, Event.type.like("step.%")))
            status = session.get(Run, run_id).status
            return steps, step_events, status

    before = counts()
    attempts = [
        lambda session: journal.begin_step(session, stale, "after-takeover", kind="test"),
        lambda session: journal.finish_step(session, stale, "before-takeover", output={"late": True}),
        lambda session: runs.finish_run(session, stale, runs.RunStatus.COMPLETED, result="stale"),
        lambda session: runs.renew_lease(session, stale, 60),
    ]
    for attempt in attempts:
        with pytest.raises(StaleLeaseError):
            with stack.db.transaction() as session:
                attempt(session)
    assert counts() == before
    with stack.db.transaction() as session:
        step = journal.load_step(session, run_id, "before-takeover")
        assert step.status == "started" and step.output is None
        # the current holder's writes still work, and re-begin the interrupted step as attempt 2
        assert journal.begin_step(session, current, "before-takeover", kind="test").attempt == 2
    with stack.db.transaction() as session:
        journal.finish_step(session, current, "before-takeover", output={"by": "current"})
        assert runs.finish_run(session, current, runs.RunStatus.COMPLETED, result="ok")
    with stack.db.transaction() as session:
        run = session.get(Run, run_id)
        assert (run.status, run.result) == ("completed", "ok")


def test_a_takeover_waits_for_an_in_flight_fenced_write(isolated) -> None:  # type: ignore[no-untyped-def]
    """No window between the fence check and the write: the claimant blocks until the write commits."""
    stack, chat = isolated
    run_id = create_probe_run(stack.db, chat)
    [holder] = race(stack.db, run_id, contenders=1)
    claimed_at: list[float] = []

    def take_over() -> None:
        with stack.db.transaction() as session:
            session.execute(update(Run).where(Run.id == run_id)
                            .values(lease_expires_at=func.now() - text("interval '1 second'")))
            lease = runs.claim_run(session, run_id, "usurper", 60)
            assert lease is not None
        claimed_at.append(time.monotonic())

    with stack.db.transaction() as session:
        journal.begin_step(session, holder, "in-flight", kind="test")  # fence checked, row share-locked
        usurper = threading.Thread(target=take_over)
        usurper.start()
        time.sleep(0.5)
        assert not claimed_at, "the takeover must wait for the fenced write to commit"
        committed_at = time.monotonic()
    usurper.join(10)
    assert claimed_at and claimed_at[0] >= committed_at
    with pytest.raises(StaleLeaseError):
        with stack.db.transaction() as session:
            journal.finish_step(session, holder, "in-flight", output={})


def test_runs_created_in_the_same_instant_still_queue_one_behind_the_other(isolated) -> None:  # type: ignore[no-untyped-def]
    stack, chat = isolated
    first, second = create_probe_run(stack.db, chat), create_probe_run(stack.db, chat)
    with stack.db.transaction() as session:
        instant = session.get(Run, first).created_at
        session.execute(update(Run).where(Run.id.in_([first, second])).values(created_at=instant))
    with stack.db.transaction() as session:
        blockers = {run_id: runs.earlier_unfinished_run(session, session.get(Run, run_id))
                    for run_id in (first, second)}
    earlier, later = sorted([first, second])
    assert blockers[earlier] is None  # exactly one goes first: no two runs wait for each other
    assert blockers[later] is not None and blockers[later].id == earlier


def test_a_run_cancelled_while_it_parks_for_approval_ends_quietly(isolated) -> None:  # type: ignore[no-untyped-def]
    from orchestrator.store import approvals

    stack, chat = isolated
    run_id = create_probe_run(stack.db, chat)
    [lease] = race(stack.db, run_id, contenders=1)
    with stack.db.transaction() as session:
        approvals.request_approval(session, session.get(Run, run_id), "turn/0000/tool/0", "run_command",
                                   {"argv": ["ls"]}, None)
    with stack.db.transaction() as session:
        runs.cancel_run(session, run_id)
    with stack.db.transaction() as session:
        assert runs.park_run(session, lease) is False  # nothing to enqueue, and no exception
        assert runs.requeue_run(session, lease) is False
        assert runs.finish_run(session, lease, runs.RunStatus.COMPLETED) is False
    with stack.db.transaction() as session:
        assert session.get(Run, run_id).status == "cancelled"


def test_the_session_list_says_waiting_from_the_moment_an_approval_is_asked(isolated) -> None:  # type: ignore[no-untyped-def]
    """The approval is asked in one transaction and the run parks in a later one; the page shows the
    approval card at once, so the session list must not say `running` in between."""
    from orchestrator.store import approvals
    from orchestrator.store import sessions as chat_sessions

    stack, chat = isolated
    with stack.db.transaction() as session:
        run_id = runs.create_run(session, project_id=uuid.UUID(chat["project_id"]), session_id=uuid.UUID(chat["id"]),
                                 kind="agent", input={}, created_by=None).id
    [lease] = race(stack.db, run_id, contenders=1)

    def listed() -> str:
        found = stack.api.ok("GET", f"/api/projects/{chat['project_id']}/sessions")["sessions"]
        return {item["id"]: item["activity"] for item in found}[chat["id"]]

    assert listed() == "running"
    with stack.db.transaction() as session:
        approval = approvals.request_approval(session, session.get(Run, run_id), "turn/0000/tool/0", "run_command",
                                              {"argv": ["ls"]}, None)
    assert listed() == "waiting"  # not parked yet
    with stack.db.transaction() as session:
        assert runs.park_run(session, lease) is False
    with stack.db.transaction() as session:
        assert session.get(Run, run_id).status == "waiting"
        assert chat_sessions.activity(session, [uuid.UUID(chat["id"])]) == {uuid.UUID(chat["id"]): "waiting"}
        session.get(approvals.Approval, approval.id).status = "approved"  # decided: the run is the state again
        session.flush()
        assert chat_sessions.activity(session, [uuid.UUID(chat["id"])]) == {uuid.UUID(chat["id"]): "waiting"}
