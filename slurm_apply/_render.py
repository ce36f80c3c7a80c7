"""The one renderer of a job's status: the text that ``str(status)`` and the CLI show.

Every sentence shown to a user about a status is written here. Hints name what to do next in
the caller's language: Python calls for ``str()``, commands for the CLI.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from ._status import JobStatus, TaskStatus

# Task states that need no explanation in a status, and that `logs --failed` leaves out.
HEALTHY_STATES = ("COMPLETED", "PENDING", "RUNNING")


def status_text(st: "JobStatus", *, verbose: bool = False, cli: bool = False,
                show_elapsed: bool = True) -> str:
    """The status as text: a summary, a progress bar, tasks by state, then what went wrong.

    ``cli`` words the hints as commands (``slurm-apply resubmit DIR``) rather than calls;
    ``show_elapsed=False`` leaves out the one line that changes every second.
    """
    ids = ", ".join(st.job_ids) or "not submitted"
    handled = st.rows_done + st.rows_failed
    pct = int(100 * handled / st.rows_total) if st.rows_total else 100
    took = f", elapsed {duration(st.elapsed_s)}" if show_elapsed and st.elapsed_s is not None else ""
    over = st.ended or st.state == "NOT_SUBMITTED"
    lines = [
        f"job {st.jobname} [{ids}]: {st.state}",
        f"  {bar(st.rows_done, st.rows_failed, st.rows_total)} {handled}/{st.rows_total} rows "
        f"({pct}%){took}",
        "  rows: " + _rows_line(st, over),
        "",
    ]
    many_subs = len({t.submission for t in st.task_details}) > 1
    table = _tasks_verbose(st.task_details, many_subs) if verbose else _tasks_grouped(st.task_details, many_subs)
    lines.extend("  " + line for line in table)
    lines.extend(_problems(st, over))
    lines.extend(f"  note: {n}" for n in st.notes)
    lines.extend(_hints(st, cli))
    return "\n".join(lines)


def _rows_line(st: "JobStatus", over: bool) -> str:
    text = f"{st.rows_done} done, {st.rows_failed} failed, "
    if over:
        return text + f"{st.rows_missing} missing"
    text += f"{st.rows_pending} to go"
    return text + (f", {st.rows_missing} missing" if st.rows_missing else "")


def _problems(st: "JobStatus", over: bool) -> List[str]:
    lines: List[str] = []
    if st.failed_rows:
        first = f" (first: {st.first_error})" if st.first_error else ""
        lines.append(f"  failed rows: {compress_rows(st.failed_rows)}{first}")
    if st.missing_rows and (over or st.missing_reasons):
        for why, rows in st.missing_by_reason().items():
            lines.append(f"  missing rows: {compress_rows(rows)} ({why})")
    return [""] + lines if lines else []


def _hints(st: "JobStatus", cli: bool) -> List[str]:
    if not st.ended or not (st.failed_rows or st.missing_rows):
        return []
    d = shlex.quote(st.job_dir)
    failed = bool(st.failed_rows)
    bad_tasks = failed or any(t.state not in HEALTHY_STATES for t in st.task_details)
    if cli:
        logs = f"slurm-apply logs {d} --failed"
        again = f"slurm-apply resubmit {d}" + (" --failed" if failed else "")
    else:
        logs = "job.get_errors(), and the logs in " + shlex.quote(st.job_dir + "/logs")
        again = "job.resubmit(" + ("failed=True" if failed else "") + ")"
    lines = [""]
    if bad_tasks:
        lines.append(f"  logs of what went wrong: {logs}")
    lines.append(f"  run them again:           {again}")
    return lines


def _tasks_grouped(tasks: Sequence["TaskStatus"], many_subs: bool) -> List[str]:
    """Tasks grouped by (submission, state, reason): a thousand-task array fits in a few lines."""
    groups: Dict[Tuple[int, str, str], List[int]] = {}
    for t in tasks:
        groups.setdefault((t.submission, t.state, one_line(t.reason)), []).append(t.task)
    head = (["SUB"] if many_subs else []) + ["STATE", "N", "TASKS", "REASON"]
    rows = [([str(sub)] if many_subs else []) + [state, str(len(ids)), compress_rows(ids), reason]
            for (sub, state, reason), ids in sorted(groups.items(), key=lambda kv: (kv[0][0], min(kv[1])))]
    return table(head, rows)


def _tasks_verbose(tasks: Sequence["TaskStatus"], many_subs: bool) -> List[str]:
    head = (["SUB"] if many_subs else []) + ["TASK", "STATE", "NODE", "ELAPSED", "MAX_RSS", "REASON"]
    rows = [([str(t.submission)] if many_subs else [])
            + [str(t.task), t.state, t.node or "-", t.elapsed or "-", t.max_rss or "-", one_line(t.reason)]
            for t in tasks]
    return table(head, rows)


def table(head: List[str], rows: List[List[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in [head, *rows]]


def one_line(text: str) -> str:
    return " ".join(text.split())


def bar(done: int, failed: int, total: int, width: int = 30) -> str:
    """``[####x.....]``: # rows done, x rows failed, . rows without an outcome yet."""
    if total <= 0:
        return "[" + "#" * width + "]"
    end_done = round(width * done / total)
    end_all = round(width * (done + failed) / total)
    if failed and end_all == end_done:  # a failure is never invisible
        if end_all < width:
            end_all += 1
        else:
            end_done -= 1
    if done + failed < total and end_all == width:  # nor is the last row still to come
        end_all -= 1
        end_done = min(end_done, end_all)
    return "[" + "#" * end_done + "x" * (end_all - end_done) + "." * (width - end_all) + "]"


def duration(seconds: Optional[float]) -> str:
    s = max(0, int(seconds or 0))
    days, s = divmod(s, 86400)
    text = f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}d {text}" if days else text


def compress_rows(rows: Sequence[int], limit: int = 12) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10' (shortened with '...' past ``limit`` ranges)."""
    ranges: List[List[int]] = []
    for r in sorted(rows):
        if ranges and ranges[-1][1] == r - 1:
            ranges[-1][1] = r
        else:
            ranges.append([r, r])
    text = [f"{a}-{b}" if a != b else f"{a}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        text.append(f"... ({len(rows)} rows)")
    return ", ".join(text)


def progress_line(st: "JobStatus") -> str:
    """One line for a wait: rows with an outcome so far, and what the tasks are doing."""
    handled = st.rows_done + st.rows_failed
    counts: Dict[str, int] = {}
    for t in st.task_details:
        counts[t.state] = counts.get(t.state, 0) + 1
    tasks = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"{st.jobname}: {handled}/{st.rows_total} rows done or failed ({tasks})"


def final_line(st: "JobStatus") -> str:
    return (f"{st.jobname}: {st.state}, {st.rows_done} done, {st.rows_failed} failed, "
            f"{st.rows_missing} missing of {st.rows_total}")
