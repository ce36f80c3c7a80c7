"""The local runner's two files per submission, as typed records (``local/s<k>.json`` and
``local/s<k>.runner.json``; the runner itself is ``_backends/local``).

* :class:`RunnerState`, the state: written once by the submitter *before* the supervisor starts,
  then only by the supervisor, and by a cancel only once the supervisor is known gone::

    {"format": 1, "script": "submit.sh", "cpus_per_task": 2, "parallel": 2, "env": {...},
     "tasks": {"0": {"state": "RUNNING", "started": 1700000000.1,
                     "proc": {"pid": 4242, "start": 991, "host": "vm"}},
               "1": {"state": "FAILED", "started": ..., "proc": ..., "ended": ..., "exit_code": 3}},
     "followup": "retry.s0.sh", "followup_run": {"state": "RUNNING", ...}}

* :class:`RunnerIdentity`, the supervisor's identity, written once by the submitter::

    {"pid": 4240, "start": 990, "host": "vm", "job_id": "local-4240", "started_at": 1700000000.0}

A process is recorded as a :class:`Proc`: pid, start time and host, so that a pid reused by
another process is never taken for the one recorded. State names are the backend's; the store
only keeps them. A file that is not such a record raises ValueError when read (the backend then
cannot tell, and says so).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

from . import layout as jd

FORMAT = 1


@dataclass(frozen=True)
class Proc:
    """A process as recorded right after it started: its start time is /proc's (clock ticks
    since boot) or ps's ``lstart`` text; None when neither could say."""

    pid: int
    start: Union[int, str, None]
    host: str

    @classmethod
    def from_json(cls, data: object) -> "Proc":
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or "host" not in data:
            raise ValueError("not a process record (no pid or host)")
        start = data.get("start")
        return cls(data["pid"], start if isinstance(start, (int, str)) else None, str(data["host"]))


@dataclass
class Run:
    """One task (or the follow-up) as the supervisor saw it."""

    state: str
    started: Optional[float] = None
    proc: Optional[Proc] = None
    ended: Optional[float] = None
    exit_code: Optional[int] = None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"state": self.state}
        for key in ("started", "ended", "exit_code"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.proc is not None:
            out["proc"] = dataclasses.asdict(self.proc)
        return out

    @classmethod
    def from_json(cls, data: object) -> "Run":
        if not isinstance(data, dict) or not isinstance(data.get("state"), str):
            raise ValueError("not a task state (no state name)")

        def number(key: str) -> Optional[float]:
            v = data.get(key)
            return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        code = number("exit_code")
        return cls(state=data["state"], started=number("started"), ended=number("ended"),
                   exit_code=int(code) if code is not None else None,
                   proc=Proc.from_json(data["proc"]) if "proc" in data else None)


@dataclass
class RunnerState:
    """What the supervisor of one submission runs, and how each of its tasks is doing."""

    script: str
    cpus_per_task: int
    parallel: int  # tasks at a time
    tasks: Dict[int, Run]
    env: Dict[str, str] = field(default_factory=dict)  # what it sets for a task: name -> template
    followup: Optional[str] = None  # the follow-up's script, run once every task has ended
    followup_run: Optional[Run] = None
    gate: Optional[str] = None  # the gate's script (chains), run before any task; exit 0 lets them run
    gate_run: Optional[Run] = None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "format": FORMAT, "script": self.script, "cpus_per_task": self.cpus_per_task,
            "parallel": self.parallel, "env": dict(self.env),
            "tasks": {str(t): run.to_json() for t, run in sorted(self.tasks.items())},
            "followup": self.followup}
        if self.followup_run is not None:
            out["followup_run"] = self.followup_run.to_json()
        if self.gate:
            out["gate"] = self.gate
        if self.gate_run is not None:
            out["gate_run"] = self.gate_run.to_json()
        return out

    @classmethod
    def from_json(cls, data: object) -> "RunnerState":
        tasks = data.get("tasks") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(tasks, dict):
            raise ValueError("not a local runner state file (no task states)")
        try:
            runs = {int(t): Run.from_json(r) for t, r in tasks.items()}
        except ValueError as exc:
            raise ValueError(f"not a local runner state file ({exc})") from None
        env = data.get("env")
        followup, gate = data.get("followup"), data.get("gate")
        return cls(script=str(data.get("script", "")), cpus_per_task=int(data.get("cpus_per_task") or 1),
                   parallel=int(data.get("parallel") or 1), tasks=runs,
                   env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
                   followup=followup if isinstance(followup, str) and followup else None,
                   followup_run=Run.from_json(data["followup_run"]) if data.get("followup_run") else None,
                   gate=gate if isinstance(gate, str) and gate else None,
                   gate_run=Run.from_json(data["gate_run"]) if data.get("gate_run") else None)


@dataclass(frozen=True)
class RunnerIdentity:
    """The supervisor of a submission: its process and the job id it answers to."""

    proc: Proc
    job_id: str
    started_at: float

    def to_json(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self.proc), "job_id": self.job_id, "started_at": self.started_at}

    @classmethod
    def from_json(cls, data: object) -> "RunnerIdentity":
        proc = Proc.from_json(data)
        assert isinstance(data, dict)  # from_json raised otherwise
        started = data.get("started_at")
        return cls(proc, str(data.get("job_id") or f"local-{proc.pid}"),
                   float(started) if isinstance(started, (int, float)) else 0.0)


def read_state(job_dir: Path, sub: int) -> RunnerState:
    """Raises OSError or ValueError when it cannot be read."""
    return RunnerState.from_json(jd.read_json(jd.local_state_path(job_dir, sub)))


def write_state(job_dir: Path, sub: int, state: RunnerState) -> None:
    jd.write_json(jd.local_state_path(job_dir, sub), state.to_json())


def read_identity(job_dir: Path, sub: int) -> RunnerIdentity:
    """Raises OSError or ValueError when it cannot be read."""
    return RunnerIdentity.from_json(jd.read_json(jd.local_runner_path(job_dir, sub)))


def write_identity(job_dir: Path, sub: int, ident: RunnerIdentity) -> None:
    jd.write_json(jd.local_runner_path(job_dir, sub), ident.to_json())
