"""The front door: ``slurm_apply``, ``slurm_map`` and ``slurm_call``."""

from __future__ import annotations

import functools
import os
import platform
import secrets
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from .. import _backends as backends
from . import chain as _chain
from . import config as _config
from .._store import layout as jd
from .._launch import write as _submit
from .._launch import validate as v
from .._errors import InputError, JobDirError, SubmissionError
from .._job.handle import SlurmJob
from .preflight import Preflight, WarmPreflight, start as start_preflight, warm_modules
from .._job.stopping import stop_followups
from .._job.upstreams import open_ids
from .._store.manifest import Manifest, Submission
from .._store.payload import sync_buffers_later, write_payload
from .._store.table import write as write_table

if TYPE_CHECKING:
    import pandas as pd

PAYLOAD_WARN_MB = 100
# A node failure or a preemption is usually over by the next run, and two doublings (4x the
# memory or time asked for) cover most misestimates without letting a job grow unbounded.
DEFAULT_RETRIES = 2
_BACKENDS = ("auto", *backends.NAMES)


def slurm_apply(
    f: Callable[..., Any],
    params_df: "pd.DataFrame",
    *,
    add_objects: Union[Mapping[str, Any], Sequence[str], None] = None,
    pkgs: Optional[Sequence[str]] = None,
    nodes: Optional[int] = None,
    cpus_per_node: Optional[int] = None,
    slurm_options: Optional[Mapping[str, Any]] = None,
    setup: Optional[Sequence[str]] = None,
    more_args: Optional[Mapping[str, Any]] = None,
    jobname: Optional[str] = None,
    job_dir: Union[str, "os.PathLike[str]", None] = None,
    submit: bool = True,
    backend: str = "auto",
    max_concurrent: Optional[int] = None,
    seed: Union[int, None, bool] = None,
    seed_arg: Optional[str] = None,
    rows_per_chunk: Optional[int] = None,
    max_failures: Union[int, float, None] = None,
    retries: int = DEFAULT_RETRIES,
    retry_errors: bool = False,
    max_mem: Optional[str] = None,
    max_time: Optional[str] = None,
    overwrite: bool = False,
    force: bool = False,
    preflight: bool = True,
    after: Union[SlurmJob, str, "os.PathLike[str]", Sequence[Union[SlurmJob, str, "os.PathLike[str]"]], None] = None,
    _caller_globals: Optional[Mapping[str, Any]] = None,
) -> SlurmJob:
    """Run ``f`` once per row of ``params_df`` as one Slurm array job; return its handle.

    Parameters
    ----------
    f : callable
        Called as ``f(**row)`` for every row: column names are argument names.
    params_df : pandas.DataFrame
        One row per call.
    add_objects : dict or list of str, optional
        Objects ``f`` needs, visible to it as globals on the node. A list names globals of the
        caller, as in rslurm.
    more_args : dict, optional
        Constant keyword arguments given to every call, e.g. ``{"n_iter": 1000, "data": X}``
        (rslurm's ``...``, batchtools' ``more.args``); stored once with the function, not per
        row. A name that is also a column is refused. ``functools.partial(f, ...)`` works too.
    pkgs : list of str, optional
        Modules imported on the node before ``f`` runs.
    nodes : int, optional
        The most array tasks to use (fewer if there are few rows). Default: the site defaults
        file's, else 2.
    cpus_per_node : int, optional
        Processes per task, and the task's ``--cpus-per-task``. Default: the site defaults
        file's, else 2.
    slurm_options : dict, optional
        Extra options of the scheduler, one header line each (on Slurm sbatch's: ``--key=value``),
        e.g. ``{"time": "1:00:00", "mem": "4G"}``;
        ``True`` gives a bare flag. Merged over the site defaults file's. Unknown option names
        and malformed common values (time, mem, nodes, gres, gpus) are refused.
    setup : list of str, optional
        Shell lines run in the task before the worker starts, verbatim, e.g.
        ``["module load cuda/12.1", "source ~/venv/bin/activate"]``; kept for resubmissions.
        Default: the site defaults file's.
    jobname : str, optional
        Names the job and its directory ``_rslurm_<jobname>``; by default f's name, the time
        and a short random suffix, so calls in a loop never collide.
    job_dir : path, optional
        The directory that holds the job directory (default: the current directory).
    submit : bool, default True
        False writes the directory and ``submit.sh`` only; ``sbatch submit.sh`` runs it later.
    backend : {"auto", "slurm", "sge", "local"}
        "auto" uses ``$SLURM_APPLY_BACKEND`` or the site defaults file's ``backend`` when set;
        otherwise Slurm where a cluster answers, else Grid Engine where this shell is set up
        for a cell ("sge"), else this machine.
    max_concurrent : int, optional
        At most this many array tasks run at once (``--array=0-N%max_concurrent``).
    seed : int, None or False
        The job's seed; each row's seed derives from it and the row's index, and seeds Python's
        ``random`` (and NumPy's global generator when loaded) before the row runs. Drawn at
        random and recorded when None. False turns per-row seeding off (it costs about 5 us a
        row, which matters only for rows that take microseconds).
    seed_arg : str, optional
        Also pass the row's seed to ``f`` as this keyword argument.
    rows_per_chunk : int, optional
        Rows per unit of work handed to a process (default: balanced automatically). A job
        has at most 10,000 chunks (each is a claim file), so a smaller value is raised to fit.
    max_failures : int or float, optional
        Stop early when this many rows have raised (an integer), or this fraction of the rows
        (a number between 0 and 1, e.g. 0.01): no task then starts another chunk, and a process
        leaves the rest of its chunk, so a bug that makes every row fail costs seconds, not the
        whole job. The status says the job was stopped early and why; the rows not run are
        missing, for ``resubmit()`` once ``f`` is fixed. Resubmissions inherit it. Default:
        run every row whatever fails.
    retries : int, default 2
        How many times a row whose task died (NODE_FAIL, PREEMPTED, OUT_OF_MEMORY, TIMEOUT,
        LOST) is run again automatically, with nothing running on the login node: a small
        follow-up job starts when the array ends and submits the retry. After OUT_OF_MEMORY
        the retry asks for twice the memory, after TIMEOUT for twice the time. 0: never.
    retry_errors : bool, default False
        Retry the rows that raised too (by default an exception is the row's result).
    max_mem, max_time : str, optional
        The most memory (e.g. ``"64G"``) and time (e.g. ``"2-00:00:00"``) a retry may ask
        for; the partition's MaxMemPerNode and MaxTime bound it too.
    overwrite : bool, default False
        Replace an existing job directory of the same name. Refused (JobActiveError) while
        that job has tasks queued, running or unknown: cancel it first.
    force : bool, default False
        With ``overwrite``, replace the old job even so: its tasks are cancelled first, and any
        that still run cannot write into the new job (the job's token no longer matches).
    preflight : bool, default True
        Before submitting, load the pickled function and objects in a fresh interpreter.
    after : SlurmJob, job directory, or a list of them, optional
        Queue this job at once, to start only once every row of these jobs (of the same
        backend) is done, their automatic retries included. If one of them ends with rows
        failed or missing, this job never runs: it ends with nothing queued, and its status
        names that job and its rows.

    Returns
    -------
    SlurmJob
    """
    started = time.perf_counter()
    caller = _caller_globals if _caller_globals is not None else sys._getframe(1).f_globals
    c = _checked(dict(f=f, params_df=params_df, add_objects=add_objects, pkgs=pkgs, nodes=nodes,
                      cpus_per_node=cpus_per_node, slurm_options=slurm_options, setup=setup,
                      more_args=more_args, jobname=jobname, job_dir=job_dir, backend=backend,
                      max_concurrent=max_concurrent, seed=seed, seed_arg=seed_arg,
                      rows_per_chunk=rows_per_chunk, max_failures=max_failures,
                      retries=retries, retry_errors=retry_errors, max_mem=max_mem, max_time=max_time,
                      overwrite=overwrite, after=after, submit=submit), caller)
    if c.path.exists():  # overwrite=True: the old job must be over (or force)
        _replace_old_job(c.path, force)
    manifest = Manifest(
        jobname=c.jobname, job_dir=str(c.path), token=secrets.token_hex(8),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), n_rows=int(len(params_df)),
        columns=[str(col) for col in params_df.columns], function=_describe(f),
        python=sys.executable, python_version=platform.python_version(), workdir=os.getcwd(),
        pythonpath=_submit.caller_pythonpath(), objects=sorted(c.objects), pkgs=c.pkgs,
        seed=None if c.seed is False else (c.seed if c.seed is not None else secrets.randbits(32)),
        seed_arg=seed_arg, rows_per_chunk=c.rows_per_chunk, payload_bytes=c.size.total,
        packages=dict(_package_versions(tuple(c.pkgs))), defaults=c.defaults,
        more_args=sorted(c.more_args), retry=c.retry, after=_chain.describe(c.after))
    first = Submission(index=0, script=jd.script_name(0), rows=((0, manifest.n_rows),),
                       n_rows=manifest.n_rows, n_tasks=0, cpus_per_task=c.cpus_per_node, n_chunks=0,
                       nodes=c.nodes, backend=c.backend, slurm_options=c.options,
                       max_concurrent=c.max_concurrent, setup=tuple(c.setup),
                       max_failures=c.max_failures)
    _write_job(c.path, manifest, first, (c.f, c.objects), params_df, overwrite=overwrite,
               preflight=preflight, started=started)
    try:
        if c.after:
            _chain.gate_first(c.path, manifest, c.after)
        if submit:
            _submit_first(c.path, manifest, open_ids(c.after))
    finally:
        # The big buffers go to disk behind the call, once its small files have: on ext4 an
        # fsync of those would otherwise wait for the buffers' (the journal orders them).
        sync_buffers_later(c.path)
    return SlurmJob(c.path)


def _describe(f: Any) -> str:
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', type(f).__name__)}"


def _checked(a: Dict[str, Any], caller: Mapping[str, Any]) -> SimpleNamespace:
    """Every argument of slurm_apply checked, in an order that fails fast and writes nothing;
    the site defaults filled in. Asks the scheduler last (is there a cluster, which options it takes)."""
    v.check_choice("backend", a["backend"], _BACKENDS)
    # Which scheduler first: its dialect checks the options and writes the script.
    requested = _config.backend(a["backend"], _BACKENDS)
    backend = backends.choose(requested)
    rules = backends.dialect(backend)
    site, defaults = _config.resolve(nodes=a["nodes"], cpus_per_node=a["cpus_per_node"],
                                     slurm_options=a["slurm_options"], setup=a["setup"], rules=rules)
    f, df, seed_arg = a["f"], a["params_df"], a["seed_arg"]
    c = SimpleNamespace(defaults=defaults, setup=v.check_setup(site["setup"]))
    v.check_function(f)
    c.nodes = v.check_positive_int("nodes", site["nodes"])
    c.cpus_per_node = v.check_positive_int("cpus_per_node", site["cpus_per_node"])
    c.max_concurrent = v.check_optional_positive_int("max_concurrent", a["max_concurrent"])
    c.rows_per_chunk = v.check_optional_positive_int("rows_per_chunk", a["rows_per_chunk"])
    c.max_failures = v.check_max_failures(a["max_failures"])
    c.retry = v.check_retry_policy(a["retries"], a["retry_errors"], a["max_mem"], a["max_time"], rules)
    c.seed = v.check_seed(a["seed"])
    v.check_seed_arg(seed_arg, c.seed, df)
    c.more_args = v.check_more_args(f, a["more_args"], df, seed_arg)
    v.check_params(f, df, extra_args=([seed_arg] if seed_arg else []) + list(c.more_args))
    c.objects = v.resolve_objects(a["add_objects"], caller)
    c.pkgs = v.check_pkgs(a["pkgs"])
    c.options = v.check_options(site["slurm_options"], rules)
    c.jobname = v.check_jobname(a["jobname"] if a["jobname"] is not None else v.default_jobname(f))
    c.path = _job_path(c.jobname, a["job_dir"], a["overwrite"], rules)
    c.f = functools.partial(f, **c.more_args) if c.more_args else f  # stored once, with f
    c.size = v.check_payload(c.f, c.objects)  # before anything is written: it may not pickle
    if c.size.pickled > PAYLOAD_WARN_MB * 2**20:
        # Out-of-band buffers (arrays, DataFrames) are shared on a node; the rest is not.
        warnings.warn(
            f"the pickled function and objects take {c.size.pickled / 2**20:.0f} MB; every task "
            "reads them and each of its processes holds its own copy. NumPy arrays and DataFrames "
            "are shared instead (memory-mapped on the nodes): pass big data as those, or have f "
            "load it from a file.", stacklevel=3)
    c.backend = backend
    # It asks the scheduler of the jobs named (a status each); a job of another one is refused first.
    c.after = _chain.check_after(a["after"], c.backend, c.path, a["submit"])
    backends.get(c.backend).check_usable(requested)
    backends.get(c.backend).check_resources(c.cpus_per_node, c.options)
    return c


def _job_path(jobname: str, job_dir: Any, overwrite: bool, dialect: backends.Dialect) -> Path:
    if job_dir is not None and not Path(job_dir).is_dir():
        raise InputError(f"job_dir {os.fspath(job_dir)!r} is not an existing directory; create it first")
    path = jd.default_dir(jobname, job_dir)
    if path.exists() and not overwrite:
        raise jd.exists_error(path)
    # Retries, cancel() and resubmit() lock the manifest: a file system refusing locks is
    # refused now, before anything is written (and the probe leaves nothing behind).
    jd.check_locks(path if path.is_dir() else path.parent)
    try:  # a path the job script's header cannot carry fails here, not after writing
        dialect.header_value(str(jd.log_pattern(path, 0, "0")))
    except InputError as exc:
        raise InputError(f"the job directory's path cannot go in the job script: {exc}. "
                         "Choose a job_dir (and jobname) without such characters.") from None
    return path


def _replace_old_job(path: Path, force: bool) -> None:
    """overwrite=True: refuse while the old job has tasks queued, running or unknown, unless
    ``force``, which cancels them first (its tasks then cannot write here: the token changes)."""
    if not jd.manifest_path(path).exists():
        return  # not a job directory: jd.create says what to do
    try:
        old = SlurmJob.from_dir(path)
    except JobDirError:
        return  # unreadable (e.g. another format): nothing can be running from it that we know
    status = old.get_job_status()
    if status.ended or status.state == "NOT_SUBMITTED":
        stop_followups(old)  # nothing to retry now, and its directory is about to go
        return
    if not force:
        old._refuse_if_active("replace (overwrite=True)", status)
    old._stop("replace (overwrite=True)")


def _write_job(path: Path, manifest: Manifest, first: Submission, payload: Tuple[Any, Dict[str, Any]],
               params_df: "pd.DataFrame", *, overwrite: bool, preflight: bool, started: float) -> None:
    """Write the whole job directory, or nothing: on any error the directory is removed."""
    jd.create(path, overwrite=overwrite)
    check: Union[Preflight, WarmPreflight, None] = None
    try:
        jd.write_token(path, manifest.token)
        if preflight:  # it starts (or is up) and imports while the payload is written
            check = start_preflight(jd.payload_path(path), manifest.pkgs, warm_modules(*payload))
        # Big buffers are not fsynced here: slurm_apply() has it done in the background.
        manifest.payload_bytes = write_payload(path, *payload, sync_buffers=False)
        if check is not None:
            check.go()
        write_table(path, params_df)  # what s0's chunks cannot give back of it
        _submit.write_submission(path, manifest, params_df, first)
        jd.create_manifest(path, manifest)
        if check is not None:
            check.result()
    except BaseException:
        # Nothing was submitted: leave nothing half-written behind.
        if check is not None:
            check.cancel()
        jd.remove_tree(path)
        raise
    manifest.prepare_s = prepare_s = round(time.perf_counter() - started, 4)
    jd.update_manifest(path, lambda m: setattr(m, "prepare_s", prepare_s))


def _submit_first(path: Path, manifest: Manifest, upstream: Sequence[str] = ()) -> None:
    try:
        _submit.launch(path, manifest, 0, upstream=upstream)
    except SubmissionError as exc:
        # The directory stays (its manifest says the submission failed): say where it is.
        raise SubmissionError(
            f"{exc}\nThe job directory {path} is kept, marked as not submitted; "
            "SlurmJob.from_dir() on it shows that status. Fix the cause and call slurm_apply "
            "again with overwrite=True.", stderr=exc.stderr) from None


@functools.lru_cache(maxsize=32)
def _package_versions(pkgs: Tuple[str, ...]) -> Dict[str, str]:
    """Versions of the packages the job depends on (read once per process: it costs 25 ms)."""
    from importlib import metadata

    out: Dict[str, str] = {}
    for name in ["slurm_apply", "cloudpickle", "pandas", "numpy", *pkgs]:
        try:
            out[name] = metadata.version(name)
        except Exception:
            mod = sys.modules.get(name)
            ver = getattr(mod, "__version__", None)
            if ver:
                out[name] = str(ver)
    return out
