"""The one renderer of a job's status: text for ``str(status)`` and the CLI, HTML for a notebook,
and the words of a progress display.

Every sentence shown to a user about a status is written here, from one set of facts
(:func:`_facts`) that both faces format. Hints name what to do next in the caller's language:
Python calls for ``str()`` and the notebook, commands for the CLI.
"""

from __future__ import annotations

import html
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

if TYPE_CHECKING:
    import numpy as np

    from .retries import RetryLine
    from .model import JobStatus, TaskStatus

# Task states that need no explanation in a status, and that `logs --failed` leaves out.
HEALTHY_STATES = ("COMPLETED", "PENDING", "RUNNING")
# How the text face leads into each hint (aligned as the README shows them).
_HINT_LEADS = {"logs": "logs of what went wrong: ", "again": "run them again:           "}
_HINT_LABELS = {"logs": "logs of what went wrong", "again": "run them again"}
HTML_TASK_GROUPS = 20  # task groups an HTML status lists before it says "and N more"


@dataclass
class _Facts:
    """What a status shows, before it is given a face."""

    ids: str
    handled: int
    pct: int
    over: bool
    rows_line: str
    task_head: List[str]
    task_rows: List[List[str]]
    problems: List[Tuple[str, str]] = field(default_factory=list)  # (label, text)
    retries: List[Tuple[str, str]] = field(default_factory=list)  # (label, text)
    hints: List[Tuple[str, str]] = field(default_factory=list)  # (key of _HINT_LEADS, text)


def _facts(st: "JobStatus", *, cli: bool, verbose: bool = False) -> _Facts:
    handled = st.rows_done + st.rows_failed
    over = st.ended or st.state == "NOT_SUBMITTED"
    many_subs = len({t.submission for t in st.task_details}) > 1
    head, rows = (_tasks_verbose if verbose else _tasks_grouped)(st.task_details, many_subs)
    return _Facts(
        ids=", ".join(st.job_ids) or "not submitted", handled=handled,
        pct=int(100 * handled / st.rows_total) if st.rows_total else 100, over=over,
        rows_line=_rows_line(st, over), task_head=head, task_rows=rows,
        problems=_problems(st, over), retries=_retries(st) + _chain(st), hints=_hints(st, cli))


def status_text(st: "JobStatus", *, verbose: bool = False, cli: bool = False,
                show_elapsed: bool = True) -> str:
    """The status as text: a summary, a progress bar, tasks by state, then what went wrong.

    ``cli`` words the hints as commands (``slurm-apply resubmit DIR``) rather than calls;
    ``show_elapsed=False`` leaves out the one line that changes every second.
    """
    fx = _facts(st, cli=cli, verbose=verbose)
    took = f", elapsed {duration(st.elapsed_s)}" if show_elapsed and st.elapsed_s is not None else ""
    lines = [
        f"job {st.jobname} [{fx.ids}]: {st.state}",
        f"  {bar(st.rows_done, st.rows_failed, st.rows_total)} {fx.handled}/{st.rows_total} rows "
        f"({fx.pct}%){took}",
        "  rows: " + fx.rows_line,
        "",
    ]
    lines.extend("  " + line for line in table(fx.task_head, fx.task_rows))
    if fx.problems or fx.retries:
        lines.append("")
        lines.extend(f"  {label}: {text}" for label, text in fx.problems + fx.retries)
    lines.extend(f"  note: {n}" for n in st.notes)
    if fx.hints:
        lines.append("")
        lines.extend(f"  {_HINT_LEADS[key]}{text}" for key, text in fx.hints)
    return "\n".join(lines)


def _rows_line(st: "JobStatus", over: bool) -> str:
    text = f"{st.rows_done} done, {st.rows_failed} failed, "
    if over:
        return text + f"{st.rows_missing} missing"
    text += f"{st.rows_pending} to go"
    return text + (f", {st.rows_missing} missing" if st.rows_missing else "")


def _problems(st: "JobStatus", over: bool) -> List[Tuple[str, str]]:
    out: List[Tuple[str, str]] = []
    if st.failed_rows:
        first = f" (first: {st.first_error})" if st.first_error else ""
        out.append(("failed rows", f"{st.rows_text(st.failed_rows)}{first}"))
    if st.missing_rows and (over or st.missing_reasons):
        for why, rows in st.missing_by_reason().items():
            out.append(("missing rows", f"{st.rows_text(rows)} ({why})"))
    return out


# What the follow-up of the latest submission is doing, or did, when it is worth saying.
_RETRY_WORDS = {
    "deciding": "deciding what to run again ({})", "unknown": "the scheduler could not be asked "
    "about the follow-up ({})", "stopped": "{}", "gave up": "gave up: {}", "lost": "{}",
    "off": "off: {}", "used up": "all {} used",
}


def _retries(st: "JobStatus") -> List[Tuple[str, str]]:
    """Automatic retries: each retried row's history, grouped ("rows 7, 9: OUT_OF_MEMORY at
    200M, done at 400M"), rows not retried and why, and the latest follow-up's state."""
    r = st.retries
    out = [("retried", f"{_line_rows(st, line)}: " + ", ".join(
        [_at(state, limit) for state, limit in line.steps] + [_at(*line.outcome)]))
        for line in r.lines]
    out += [("not retried", f"{_rows(st, rows)} ({why})") for why, rows in r.given_up.items()]
    if r.state in _RETRY_WORDS and (r.state != "used up" or r.lines):
        text = _RETRY_WORDS[r.state].format(one_line(r.detail)) if r.detail else r.state
        out.append(("automatic retries", text))
    return out


def _chain(st: "JobStatus") -> List[Tuple[str, str]]:
    """What the job waits for (or waited for, and what that decided) and what waits for it."""
    out: List[Tuple[str, str]] = []
    if st.after:
        upstream = ", ".join(st.after)
        if st.gate.startswith("closed: "):
            out.append(("never runs", st.gate[len("closed: "):]))
        elif st.gate == "open":
            out.append(("ran after", upstream))
        else:
            out.append(("waits for", f"{upstream} (every row done, retries included)"))
    if st.waited_by:
        out.append(("waited for by", ", ".join(st.waited_by)))
    return out


def _rows(st: "JobStatus", rows: Sequence[int]) -> str:
    return ("row " if len(rows) == 1 else "rows ") + st.rows_text(rows)


def _line_rows(st: "JobStatus", line: "RetryLine", limit: int = 12) -> str:
    """The rows of a retry line: by their labels when params_df has some, else as ranges."""
    word = "row " if line.n_rows == 1 else "rows "
    if st.row_labels:
        more = f", ... ({line.n_rows} rows)" if line.n_rows > limit else ""
        return word + st.rows_text(line.positions(limit)) + more
    shown = [f"{a}-{b - 1}" if b - a > 1 else f"{a}" for a, b in line.rows[:limit]]
    more = f", ... ({line.n_rows} rows)" if len(line.rows) > limit else ""
    return word + ", ".join(shown) + more


def _at(what: str, limit: str) -> str:
    what = "raised" if what == "ERROR" else what  # a row that raised, retried (retry_errors)
    return f"{what} at {limit}" if limit else what


def _hints(st: "JobStatus", cli: bool) -> List[Tuple[str, str]]:
    if not st.ended or not (st.failed_rows or st.missing_rows):
        return []
    d = shlex.quote(st.job_dir)
    failed = bool(st.failed_rows)
    bad_tasks = failed or any(t.state not in HEALTHY_STATES for t in st.task_details)
    if cli:
        logs = f"slurm-apply logs {d} --failed"
        again = f"slurm-apply resubmit {d}" + (" --failed" if failed else "")
    else:
        logs = "job.get_errors(), and the logs in " + shlex.quote(logs_dir(st))
        again = "job.resubmit(" + ("failed=True" if failed else "") + ")"
    return ([("logs", logs)] if bad_tasks else []) + [("again", again)]


def logs_dir(st: "JobStatus") -> str:
    return st.job_dir.rstrip("/") + "/logs"


def _tasks_grouped(tasks: Sequence["TaskStatus"], many_subs: bool) -> Tuple[List[str], List[List[str]]]:
    """Tasks grouped by (submission, state, reason): a thousand-task array fits in a few lines."""
    groups: Dict[Tuple[int, str, str], List[int]] = {}
    for t in tasks:
        groups.setdefault((t.submission, t.state, one_line(t.reason)), []).append(t.task)
    head = (["SUB"] if many_subs else []) + ["STATE", "N", "TASKS", "REASON"]
    rows = [([str(sub)] if many_subs else []) + [state, str(len(ids)), compress_rows(ids), reason]
            for (sub, state, reason), ids in sorted(groups.items(), key=lambda kv: (kv[0][0], min(kv[1])))]
    return head, rows


def _tasks_verbose(tasks: Sequence["TaskStatus"], many_subs: bool) -> Tuple[List[str], List[List[str]]]:
    head = (["SUB"] if many_subs else []) + ["TASK", "STATE", "NODE", "ELAPSED", "MAX_RSS", "REASON"]
    rows = [([str(t.submission)] if many_subs else [])
            + [str(t.task), t.state, t.node or "-", t.elapsed or "-", t.max_rss or "-", one_line(t.reason)]
            for t in tasks]
    return head, rows


# -- HTML: the notebook's face of the same facts ---------------------------------------------------

_STATE_COLOURS = {"COMPLETED": "#2e7d32", "RUNNING": "#1565c0", "RETRYING": "#1565c0",
                  "PENDING": "#616161", "NOT_SUBMITTED": "#616161", "UNKNOWN": "#e65100"}
_RED = "#c62828"  # any other state says something went wrong
FAILED_COLOUR = "#e53935"  # failed rows, in a bar
# A progress bar is one colour: when the job ended with rows failed or missing it is amber,
# not green (all went well) nor red (which would say every row failed).
ENDED_BADLY_COLOUR = "#fb8c00"
_MUTED = "color:#888"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _badge(state: str) -> str:
    colour = _STATE_COLOURS.get(state, _RED)
    return (f'<span style="background:{colour};color:#fff;border-radius:3px;padding:0 5px;'
            f'font-weight:bold">{_esc(state)}</span>')


def status_html(st: "JobStatus", *, title: str = "") -> str:
    """The status as HTML (``JobStatus._repr_html_``): the facts of :func:`status_text`, every
    value escaped. ``title`` is a first line of plain text (escaped too)."""
    fx = _facts(st, cli=False)
    took = f" · elapsed {duration(st.elapsed_s)}" if st.elapsed_s is not None else ""
    out = ['<div class="slurm-apply-status" style="line-height:1.5">']
    if title:
        out.append(f'<div style="{_MUTED}">{_esc(title)}</div>')
    out.append(f'<div><b>job {_esc(st.jobname)}</b> <span style="{_MUTED}">[{_esc(fx.ids)}]</span> '
               f'{_badge(st.state)}</div>')
    out.append(f'<div style="display:flex;align-items:center;gap:8px">{_html_bar(st)}'
               f'<span>{fx.handled}/{st.rows_total} rows ({fx.pct}%){_esc(took)}</span></div>')
    out.append(_html_table(["done", "failed", "pending", "missing", "total"],
                           [[str(st.rows_done), str(st.rows_failed), str(st.rows_pending),
                             str(st.rows_missing), str(st.rows_total)]], caption="rows"))
    rows = fx.task_rows[:HTML_TASK_GROUPS]
    if len(fx.task_rows) > len(rows):
        more = len(fx.task_rows) - len(rows)
        rows.append(["…"] * (len(fx.task_head) - 1) + [f"and {more} more groups: status.tasks_frame()"])
    out.append(_html_table(fx.task_head, rows, caption="tasks"))
    out.extend(f"<div><b>{_esc(label)}</b>: {_esc(text)}</div>" for label, text in fx.problems + fx.retries)
    out.extend(f'<div style="{_MUTED}">note: {_esc(n)}</div>' for n in st.notes)
    out.extend(f"<div>{_esc(_HINT_LABELS[key])}: <code>{_esc(text)}</code></div>" for key, text in fx.hints)
    out.append(f'<div style="{_MUTED}">logs: <code>{_esc(logs_dir(st))}</code></div></div>')
    return "\n".join(out)


def error_html(title: str, exc: BaseException) -> str:
    """What a display shows when the status could not be read."""
    return (f'<div class="slurm-apply-status"><div style="{_MUTED}">{_esc(title)}</div>'
            f'<div>status unavailable: <code>{_esc(type(exc).__name__)}: {_esc(exc)}</code></div></div>')


def _html_bar(st: "JobStatus", width_px: int = 240) -> str:
    total = max(st.rows_total, 1)
    done, failed = 100 * st.rows_done / total, 100 * st.rows_failed / total
    min_failed = "min-width:2px;" if st.rows_failed else ""  # a failure is never invisible
    return (f'<div style="display:flex;width:{width_px}px;height:10px;background:#ddd;'
            f'border-radius:3px;overflow:hidden"><div style="width:{done:.2f}%;background:#43a047">'
            f'</div><div style="width:{failed:.2f}%;{min_failed}background:{FAILED_COLOUR}"></div></div>')


def _html_table(head: List[str], rows: List[List[str]], *, caption: str) -> str:
    cell = "padding:1px 10px 1px 0;text-align:left"
    th = "".join(f'<th style="{cell}">{_esc(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f'<td style="{cell}">{_esc(c)}</td>' for c in r) + "</tr>"
                   for r in rows)
    return (f'<table style="border-collapse:collapse;margin:4px 0"><caption style="text-align:left;'
            f'{_MUTED}">{_esc(caption)}</caption><tr>{th}</tr>{body}</table>')


# -- short forms: reprs, progress and the interrupted wait -------------------------------------

def status_repr(st: "JobStatus") -> str:
    """One line whose length does not grow with the rows or tasks of the job."""
    counts: Dict[str, int] = {}
    for t in st.task_details:
        counts[t.state] = counts.get(t.state, 0) + 1
    tasks = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    return (f"<JobStatus {st.jobname} [{_short_ids(st.job_ids)}]: {st.state}; rows: "
            f"{st.rows_done} done, {st.rows_failed} failed, {st.rows_pending} pending, "
            f"{st.rows_missing} missing of {st.rows_total}; tasks: {tasks}>")


def job_repr(jobname: str, job_ids: Sequence[str], n_rows: int, job_dir: str) -> str:
    return f"<SlurmJob {jobname} [{_short_ids(job_ids)}]: {n_rows} rows, job_dir={job_dir!r}>"


def _short_ids(ids: Sequence[str], keep: int = 3) -> str:
    if not ids:
        return "not submitted"
    more = f", +{len(ids) - keep} more" if len(ids) > keep else ""
    return ", ".join(ids[:keep]) + more


_POSTFIX_ORDER = ("RUNNING", "PENDING")  # then any other state, by name


def progress_postfix(st: "JobStatus", max_groups: int = 4) -> str:
    """What a progress bar says beside its counts: rows gone wrong and what the latest
    submission's unfinished tasks are doing, e.g. "1 failed, 3 running, 2 pending: Priority";
    once the job has ended, its state first."""
    parts = [st.state] if st.ended or st.state == "NOT_SUBMITTED" else []
    if st.rows_failed:
        parts.append(f"{st.rows_failed} failed")
    if st.rows_missing:
        parts.append(f"{st.rows_missing} missing")
    groups: Dict[Tuple[str, str], int] = {}
    for task, state in st.tasks.items():
        if state != "COMPLETED":
            # Only a pending task's reason is short and says what to expect (Priority, Resources).
            reason = one_line(st.reasons.get(task, ""))[:40] if state == "PENDING" else ""
            groups[(state, reason)] = groups.get((state, reason), 0) + 1
    order = sorted(groups.items(), key=lambda kv: (
        _POSTFIX_ORDER.index(kv[0][0]) if kv[0][0] in _POSTFIX_ORDER else len(_POSTFIX_ORDER),
        kv[0][0], -kv[1]))
    for (state, reason), n in order[:max_groups]:
        word = state.lower() if state in _POSTFIX_ORDER else state
        parts.append(f"{n} {word}" + (f": {reason}" if reason else ""))
    if len(order) > max_groups:
        parts.append("...")
    return ", ".join(parts)


def interrupted_text(jobname: str, job_dir: str, st: Optional["JobStatus"], *, cli: bool) -> str:
    """The one line a wait stopped by Ctrl-C leaves: the job goes on; how to follow or stop it."""
    d = shlex.quote(job_dir)
    again, stop = ((f"slurm-apply status {d} --watch", f"slurm-apply cancel {d}") if cli
                   else ("job.wait()", "job.cancel()"))
    where = f" at {st.rows_done + st.rows_failed}/{st.rows_total} rows" if st is not None else ""
    return (f"stopped waiting for job {jobname}{where}; its tasks keep running: "
            f"{again} waits again, {stop} cancels them")


# -- small pieces --------------------------------------------------------------------------------

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
    runs = getattr(rows, "runs", None)  # a RowSet: its runs are the ranges, nothing to expand
    if runs is not None:
        return compress_runs(runs[0], runs[1], limit)
    ranges: List[List[int]] = []
    for r in sorted(rows):
        if ranges and ranges[-1][1] == r:
            ranges[-1][1] = r + 1
        else:
            ranges.append([r, r + 1])
    return _ranges_text([a for a, _ in ranges], [b for _, b in ranges], len(rows), limit)


def compress_runs(starts: Sequence[int] | np.ndarray, stops: Sequence[int] | np.ndarray, limit: int = 12) -> str:
    """Runs [start, stop) as '1-3, 7, 9-10', the first ``limit`` of them."""
    total = int(sum(int(b) - int(a) for a, b in zip(starts, stops)))
    return _ranges_text([int(a) for a in starts[:limit + 1]], [int(b) for b in stops[:limit + 1]],
                        total, limit, more=len(starts) > limit)


def _ranges_text(starts: List[int], stops: List[int], total: int, limit: int,
                 more: bool = False) -> str:
    text = [f"{a}-{b - 1}" if b - 1 != a else f"{a}" for a, b in zip(starts[:limit], stops[:limit])]
    if more or len(starts) > limit:
        text.append(f"... ({total} rows)")
    return ", ".join(text)
