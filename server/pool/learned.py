"""What Google told us about each key: its limits per model, and the Google Cloud project it belongs to.

Google's 429 bodies name the quota that ran out (`QuotaFailure.violations[].quotaId`, e.g.
`GenerateRequestsPerDayPerProjectPerModel-FreeTier`) and its value (`quotaValue`, e.g. "20"). Learning
them per key × model lets the pool stop sending a key to a model just before Google would refuse it, rather
than spending a refused call (and the client's time) to find out. Google counts these quotas per *project*,
and its quota and permission messages name the project: keys of one project share what is learned, their
counts are added up, and a daily quota that ran out parks the whole project for that model.

Everything here is in memory and costs a dict lookup on the request path; the flusher persists what
changed (`drain`), start-up reads it back (`load`). A learned limit is forgotten after `LEARNED_TTL`:
with it in force Google never refuses again, so it would never be corrected if the project's tier changed;
after a week, one refused call teaches it again.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..upstream.failures import QuotaViolation

LEARNED_TTL = 7 * 86400.0
MINUTE = 60.0


@dataclass
class Learned:
    """Limits learned for one key × model (None: Google has not said)."""

    per_day: int | None = None            # requests per quota day
    per_minute: int | None = None         # requests per minute
    tokens_per_minute: int | None = None  # input tokens per minute (shown, not enforced: a request's size is
    #                                       not known before Google counts it)
    learned_at: float = 0.0

    def row(self, fp: str, model: str) -> tuple[str, str, int | None, int | None, int | None, float]:
        return fp, model, self.per_day, self.per_minute, self.tokens_per_minute, self.learned_at


def limit_kind(quota_id: str) -> str | None:
    """per_day, per_minute or tokens_per_minute for a quotaId Google uses; None for quotas not learned."""
    q = quota_id.lower()
    if "token" in q:
        return "tokens_per_minute" if "perminute" in q else None
    if "request" in q:
        if "perday" in q:
            return "per_day"
        if "perminute" in q:
            return "per_minute"
    return None


def mask_project(project: str) -> str:
    """A project number as the pages show it: its last 4 digits."""
    return "…" + project[-4:] if project else ""


class LearnedLimits:
    def __init__(self) -> None:
        self.limits: dict[tuple[str, str], Learned] = {}
        self.projects: dict[str, str] = {}          # key fp → project number
        self.members: dict[str, set[str]] = {}      # project number → key fps
        self._dirty_limits: set[tuple[str, str]] = set()
        self._dirty_projects: set[str] = set()

    # -- learning ----------------------------------------------------------------------------------

    def learn(self, fp: str, model: str, violations: Iterable[QuotaViolation], now: float) -> bool:
        """Take the limits a 429 names; they apply to every key of the key's project. True when one changed."""
        found: dict[str, int] = {}
        for v in violations:
            kind = limit_kind(v.quota_id)
            if kind is not None and v.value is not None:
                found[kind] = min(v.value, found.get(kind, v.value))
        if not found or not model:
            return False
        changed = False
        for member in self.peers(fp) | {fp}:
            entry = self.limits.get((member, model))
            if entry is None:
                entry = self.limits[(member, model)] = Learned()
            for kind, value in found.items():
                if getattr(entry, kind) != value:
                    setattr(entry, kind, value)
                    changed = True
            entry.learned_at = now
            self._dirty_limits.add((member, model))
        return changed

    def set_project(self, fp: str, project: str) -> bool:
        """Remember the key's project (True when it is news); the key takes on what its project learned."""
        if not project or self.projects.get(fp) == project:
            return False
        old = self.projects.get(fp)
        if old is not None:
            self.members.get(old, set()).discard(fp)
        self.projects[fp] = project
        peers = self.members.setdefault(project, set())
        for (other, model), entry in list(self.limits.items()):
            if other in peers and (fp, model) not in self.limits:
                self.limits[(fp, model)] = Learned(entry.per_day, entry.per_minute, entry.tokens_per_minute,
                                                   entry.learned_at)
                self._dirty_limits.add((fp, model))
        peers.add(fp)
        self._dirty_projects.add(fp)
        return True

    def forget(self, fp: str) -> None:
        """The owner reset the key: what was learned for it goes (it is learned again at the next refusal)."""
        for k in [k for k in self.limits if k[0] == fp]:
            entry = self.limits[k]
            entry.per_day = entry.per_minute = entry.tokens_per_minute = None
            self._dirty_limits.add(k)

    # -- reading -----------------------------------------------------------------------------------

    def get(self, fp: str, model: str, now: float) -> Learned | None:
        entry = self.limits.get((fp, model))
        if entry is None or now - entry.learned_at > LEARNED_TTL:
            return None
        return entry

    def project_of(self, fp: str) -> str | None:
        return self.projects.get(fp)

    def peers(self, fp: str) -> set[str]:
        """The other keys of the key's project (none when its project is not known)."""
        project = self.projects.get(fp)
        if project is None:
            return set()
        return self.members.get(project, set()) - {fp}

    # -- persistence -------------------------------------------------------------------------------

    def load(self, limit_rows: Iterable[tuple], project_rows: Iterable[tuple]) -> None:
        for fp, model, per_day, per_minute, tpm, learned_at in limit_rows:
            self.limits[(fp, model)] = Learned(per_day, per_minute, tpm, learned_at or 0.0)
        for fp, project in project_rows:
            old = self.projects.get(fp)
            if old is not None and old != project:
                self.members.get(old, set()).discard(fp)
            self.projects[fp] = project
            self.members.setdefault(project, set()).add(fp)

    def apply(self, limit_rows: Iterable[tuple], project_rows: Iterable[tuple]) -> None:
        """What other processes learned (a shared store's read-back), except what this one has not written yet."""
        self.load([r for r in limit_rows if (r[0], r[1]) not in self._dirty_limits],
                  [r for r in project_rows if r[0] not in self._dirty_projects and self.projects.get(r[0]) != r[1]])

    def drain(self) -> tuple[list[tuple], list[tuple]]:
        """Rows for key_learned_limit and key_project that changed since the last drain."""
        limits = [self.limits[k].row(*k) for k in self._dirty_limits if k in self.limits]
        projects = [(fp, self.projects[fp]) for fp in self._dirty_projects if fp in self.projects]
        self._dirty_limits.clear()
        self._dirty_projects.clear()
        return limits, projects

class RecentCalls:
    """When each key last called each model, and (where a per-minute limit is known) its calls of the last
    minute: for pacing (KEY_MIN_INTERVAL_MS) and learned per-minute limits. Memory only; bounded by what a
    minute holds under the learned limits."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], float] = {}
        self.window: dict[tuple[str, str], deque[float]] = {}

    def add(self, fp: str, model: str, now: float, keep_window: bool) -> None:
        self.last[(fp, model)] = now
        if keep_window:
            calls = self.window.get((fp, model))
            if calls is None:
                calls = self.window[(fp, model)] = deque()
            calls.append(now)
            self._trim(calls, now)

    @staticmethod
    def _trim(calls: deque[float], now: float) -> None:
        while calls and calls[0] <= now - MINUTE:
            calls.popleft()

    def in_last_minute(self, fp: str, model: str, now: float) -> list[float]:
        """The calls of the minute before `now` (which may lie ahead: when a key frees up is asked too)."""
        calls = self.window.get((fp, model))
        return [t for t in calls if t > now - MINUTE] if calls else []

    def take_back(self, fp: str, model: str) -> None:
        """A reserved call never reached Google."""
        calls = self.window.get((fp, model))
        if calls:
            calls.pop()
