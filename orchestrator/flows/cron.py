"""Flow schedules: five-field cron in a time zone, overlap policies and catch-up, all pure.

    next_after(expr, tz, after):
        walk the local calendar day by day from `after`'s wall-clock minute
        first matching (month, day, hour, minute) -> an aware time in `tz`
        a wall time skipped by a DST jump fires when the jump ends (02:30 -> 03:30);
        a wall time that happens twice fires once, at its first occurrence

    decide_overlap(policy, open_runs, buffered) -> Start | Skip | Buffer | CancelThenStart
    catch_up(expr, tz, last_fired, now, catchup_seconds) -> the firings to start now

Cron fields: minute hour day-of-month month day-of-week (and an optional leading seconds field, six in
all, for schedules finer than a minute), each `*`, a number, a range `a-b`, a step
`*/n` or `a-b/n`, a comma list, month and weekday names (`jan`, `mon`), weekday 0 or 7 for Sunday;
`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. As in Vixie cron, when both day fields are
restricted a day matches if either does. No I/O here: the beat task asks these functions what to do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, low, high, names) per field; names map to low + index.
SECONDS_FIELD: tuple[str, int, int, list[str]] = ("second", 0, 59, [])
FIELDS = [("minute", 0, 59, []), ("hour", 0, 23, []), ("day of month", 1, 31, []),
          ("month", 1, 12, MONTHS), ("day of week", 0, 7, WEEKDAYS)]
# A schedule that matches nothing in this many days (8 years covers every 29 February) never fires.
HORIZON_DAYS = 366 * 8 + 2
# Never start more than this many caught-up firings at once, whatever the window.
MAX_CATCH_UP = 100
# Missed firings are counted one by one up to this many (a minutely schedule down for a month).
MAX_MISSED_COUNTED = 10_000
# A firing at most this late is on time whatever `catchup_seconds` says (the beat ticks late).
ON_TIME_SECONDS = 60
TERM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/([0-9]+))?$")


class CronError(ValueError):
    """The expression or time zone is refused; the message says which field and why."""


@dataclass(frozen=True)
class CronSpec:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool
    seconds: frozenset[int] = frozenset({0})

    def matches_day(self, day: date) -> bool:
        """Vixie cron's rule: both day fields restricted -> either may match, else both must."""
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays


def _value(token: str, field: tuple[str, int, int, list[str]]) -> int:
    name, low, high, names = field
    if token in names:
        return low + names.index(token)
    if not token.isdigit():
        raise CronError(f"{name}: {token!r} is not a number" + (f" or a name ({', '.join(names)})" if names else ""))
    number = int(token)
    if not low <= number <= high:
        raise CronError(f"{name}: {number} is outside {low}-{high}")
    return number


def _parse_term(term: str, field: tuple[str, int, int, list[str]]) -> set[int]:
    """One comma-separated piece of a field: `*`, `n`, `a-b`, optionally `/step`."""
    name, low, high, _ = field
    match = TERM.match(term)
    if not match:
        raise CronError(f"{name}: cannot read {term!r} (expected *, n, a-b, */n or a-b/n)")
    base, step_text = match.groups()
    step = int(step_text) if step_text else 1
    if step < 1:
        raise CronError(f"{name}: the step in {term!r} must be at least 1")
    if base == "*":
        first, last = low, high
    elif "-" in base:
        first, last = (_value(part, field) for part in base.split("-"))
        if first > last:
            raise CronError(f"{name}: the range {base!r} runs backwards")
    else:
        first = _value(base, field)
        last = high if step_text else first
    return set(range(first, last + 1, step))


def _parse_field(text: str, field: tuple[str, int, int, list[str]]) -> frozenset[int]:
    values: set[int] = set()
    for term in text.split(","):
        values |= _parse_term(term, field)
    return frozenset(values)


def parse(expr: str) -> CronSpec:
    """Read a five-field expression, a six-field one starting with seconds, or a macro; raise CronError
    naming the bad field."""
    text = MACROS.get(expr.strip().lower(), expr.strip().lower())
    parts = text.split()
    if len(parts) not in (5, 6):
        raise CronError("a cron expression has 5 fields (minute hour day month weekday), or 6 with seconds "
                        f"first, not {len(parts)}: {expr!r}")
    seconds = _parse_field(parts.pop(0), SECONDS_FIELD) if len(parts) == 6 else frozenset({0})
    minutes, hours, days, months, weekdays = (_parse_field(part, field) for part, field in zip(parts, FIELDS))
    return CronSpec(minutes=minutes, hours=hours, days=days, months=months,
                    weekdays=frozenset(day % 7 for day in weekdays),
                    days_restricted=parts[2] != "*", weekdays_restricted=parts[4] != "*", seconds=seconds)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone, or CronError saying what a valid name looks like."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r} (use an IANA name such as 'UTC' or 'Europe/Paris')") from None


def _first_time_on(spec: CronSpec, day: date, not_before: time | None) -> time | None:
    """The earliest matching wall-clock time on `day` (at or after `not_before`)."""
    floor = (not_before.hour, not_before.minute, not_before.second) if not_before is not None else (0, 0, 0)
    for hour in sorted(spec.hours):
        if hour < floor[0]:
            continue
        for minute in sorted(spec.minutes):
            if (hour, minute) < floor[:2]:
                continue
            for second in sorted(spec.seconds):
                if (hour, minute, second) >= floor:
                    return time(hour, minute, second)
    return None


def _resolve(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """A local wall time as an instant: fold=0 puts a skipped time after the jump, a repeated one first."""
    local = datetime.combine(day, wall).replace(tzinfo=tz, fold=0)
    return local.astimezone(timezone.utc).astimezone(tz)


def next_after(expr: str | CronSpec, tz: str | ZoneInfo, after: datetime) -> datetime | None:
    """The first firing strictly after `after` (an aware datetime), in `tz`; None if it never fires."""
    spec = parse(expr) if isinstance(expr, str) else expr
    zone_info = zone(tz) if isinstance(tz, str) else tz
    if after.tzinfo is None:
        raise ValueError("next_after needs an aware datetime")
    local = after.astimezone(zone_info)
    start = local.replace(microsecond=0, tzinfo=None) + timedelta(seconds=1)
    for offset in range(HORIZON_DAYS):
        day = start.date() + timedelta(days=offset)
        if not spec.matches_day(day):
            continue
        not_before: time | None = start.time() if offset == 0 else None
        while (wall := _first_time_on(spec, day, not_before)) is not None:
            fired = _resolve(day, wall, zone_info)
            if fired > after:
                return fired
            # The repeated hour after a fall-back: this wall time already fired at its first occurrence.
            not_before = (datetime.combine(day, wall) + timedelta(seconds=1)).time()
            if not_before == time(0, 0):
                break
    return None


class Overlap(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    BUFFER_ALL = "buffer_all"
    CANCEL_OTHER = "cancel_other"


@dataclass(frozen=True)
class Start:
    """Start a run for this firing now."""


@dataclass(frozen=True)
class Skip:
    """Drop this firing: a run is still open and the policy does not queue."""


@dataclass(frozen=True)
class Buffer:
    """Keep this firing; start it when the open runs have finished (see `start_buffered`)."""


@dataclass(frozen=True)
class CancelThenStart:
    """Cancel these open runs, then start a run for this firing."""

    run_ids: tuple[str, ...]


OverlapDecision = Start | Skip | Buffer | CancelThenStart


def decide_overlap(policy: Overlap | str, open_runs: Sequence[str], buffered: int) -> OverlapDecision:
    """What a due firing does while `open_runs` of the same flow are unfinished and `buffered` wait."""
    if not open_runs and not buffered:
        return Start()
    policy = Overlap(policy)
    if policy == Overlap.SKIP:
        return Skip() if open_runs else Start()
    if policy == Overlap.BUFFER_ONE:
        return Skip() if buffered >= 1 else Buffer()
    if policy == Overlap.BUFFER_ALL:
        return Buffer()
    return CancelThenStart(tuple(open_runs))


def start_buffered(open_runs: Sequence[str], buffered: int) -> bool:
    """Whether the oldest buffered firing starts now: one at a time, once nothing is open."""
    return buffered > 0 and not open_runs


@dataclass(frozen=True)
class CatchUp:
    """Firings since the last one: `fire` start now (oldest first); `missed` are dropped (counted up
    to MAX_MISSED_COUNTED, then the count stops and the walk jumps to the window)."""

    fire: tuple[datetime, ...]
    missed: int
    cursor: datetime  # the last firing considered (fired or missed): where the next beat starts


def catch_up(expr: str | CronSpec, tz: str | ZoneInfo, last_fired: datetime, now: datetime,
             catchup_seconds: float) -> CatchUp:
    """Due firings after downtime: those no older than the window fire, older ones are missed.

    `last_fired` is the last firing acted on (or the schedule's creation, so a new schedule does not
    fire its past). The window is `catchup_seconds`, but never under ON_TIME_SECONDS: a firing a
    few seconds late because the beat ticked late is on time, not a catch-up.
    """
    spec = parse(expr) if isinstance(expr, str) else expr
    window_start = now - timedelta(seconds=max(catchup_seconds, ON_TIME_SECONDS))
    missed = 0
    cursor = last_fired
    while (due := next_after(spec, tz, cursor)) is not None and due < window_start:
        missed += 1
        cursor = due
        if missed >= MAX_MISSED_COUNTED:
            cursor = max(cursor, window_start - timedelta(microseconds=1))
            break
    fire: list[datetime] = []
    while (due := next_after(spec, tz, cursor)) is not None and due <= now:
        if len(fire) < MAX_CATCH_UP:
            fire.append(due)
        else:
            missed += 1
        cursor = due
    return CatchUp(fire=tuple(fire), missed=missed, cursor=cursor)


@dataclass(frozen=True)
class Firing:
    """What one due firing becomes: `started` (after cancelling `cancel`), `skipped` (with `reason`)
    or `buffered`."""

    at: datetime
    outcome: str
    cancel: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class BeatPlan:
    firings: tuple[Firing, ...]
    missed: int
    cursor: datetime
    start_buffered: bool  # the oldest buffered firing starts now
    next_fire_at: datetime | None


def plan_beat(expr: str | CronSpec, tz: str, policy: Overlap | str, catchup_seconds: float, cursor: datetime,
              now: datetime, open_runs: Sequence[str], buffered: int) -> BeatPlan:
    """One beat of one schedule: the due firings since `cursor` (catch_up), each decided by the
    overlap policy against the runs still open — including those this beat starts — and whether a
    buffered firing starts. Under `cancel_other`, a firing this same beat started and would cancel
    at once is skipped as superseded instead of started."""
    spec = parse(expr) if isinstance(expr, str) else expr
    due = catch_up(spec, tz, cursor, now, catchup_seconds)
    open_now, waiting, decided = list(open_runs), buffered, list[Firing]()
    for at in due.fire:
        decision = decide_overlap(policy, open_now, waiting)
        if isinstance(decision, Skip):
            decided.append(Firing(at, "skipped", reason="a run of this schedule is still open"))
        elif isinstance(decision, Buffer):
            decided.append(Firing(at, "buffered"))
            waiting += 1
        else:
            cancel = list(decision.run_ids) if isinstance(decision, CancelThenStart) else []
            superseded = [index for index, firing in enumerate(decided)
                          if firing.outcome == "started" and _placeholder(firing.at) in cancel]
            for index in superseded:  # its cancellations pass to this firing
                cancel += decided[index].cancel
                decided[index] = replace(decided[index], outcome="skipped", cancel=(),
                                         reason="superseded by a later firing")
            decided.append(Firing(at, "started", cancel=tuple(run for run in cancel if not run.startswith("@"))))
            open_now = [_placeholder(at)]
    return BeatPlan(firings=tuple(decided), missed=due.missed, cursor=due.cursor,
                    start_buffered=start_buffered(open_now, waiting),
                    next_fire_at=next_after(spec, tz, max(due.cursor, now)))


def _placeholder(at: datetime) -> str:
    """Stands for the run a firing of this beat starts (it has no id yet)."""
    return f"@{at.isoformat()}"
