"""Big jobs stay cheap (issue 12): a big shared object and a big result table, each beside a
baseline measured in the same run.

    python bench/scale.py                     # S3 (a 2 GB array) and S1 (10,000,000 rows), here
    python bench/scale.py --only S3 --gb 0.5  # a subset, smaller
    python bench/scale.py --rows 1000000      # a smaller S1
    python bench/scale.py --cluster           # on the private Slurm cluster (tests/testbed.py)

S3  ``add_objects={"X": X}``, X a 2 GB float64 array; 16 rows, nodes=4, cpus_per_node=2; each
    row sums a strided 1/16 of X, so every process reads every page of it, then holds 0.5 s.
      slurm_apply() time (submit=False, so that the buffers can be evicted from the page cache
      before the tasks start; the launch is timed apart) and the caller's peak RSS, against
      numpy.save of the same array; and until the buffers are on disk (slurm_apply() fsyncs
      its small files and leaves the buffer file's fsync to a thread that runs on after it
      returns) against numpy.save + fsync;
      the pre-flight check's peak RSS (its command run again, os.wait4);
      on the nodes, sampled every 50 ms from /proc while the rows run: the PSS summed over a
      node's task processes (smaps_rollup: a page shared by k processes counts 1/k in each), the
      largest private (anonymous) memory of a process, and bytes read per task (/proc/PID/io:
      rchar through read(), read_bytes from the disk, page faults on the mapping included).
S1  10,000,000 rows of ``f(x) = {"a": x * 0.5, "b": x + 0.25}``, nodes=4, cpus_per_node=2,
    seed=False: end to end, then get_output() again in a fresh process, by column (now) and row
    by row (the path before), against pd.DataFrame.from_records over the same dicts already in
    memory. Peak memory is over the process's own just before the call.

Every step runs in a fresh interpreter (bench/scale_steps.py), one at a time; the library is
a copy of this checkout taken at the start. Results: bench/results/scale-<time>.json, and the
table printed with PASS/FAIL against the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STEPS = HERE / "scale_steps.py"
MB = 2**20


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def step(name: str, **kwargs: Any) -> Dict[str, Any]:
    proc = subprocess.run([sys.executable, str(STEPS), name, json.dumps(kwargs)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"step {name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_kb(argv: List[str]) -> int:
    """A command's peak RSS from wait4 (it starts at this small process's own, about 20 MB)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return usage.ru_maxrss


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache (fsynced first, so that they are clean), so the
    tasks' reads of it show up in read_bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def disk_read_bytes() -> int:
    """Bytes read from every block device of this machine so far (/proc/diskstats)."""
    total = 0
    with open("/proc/diskstats") as fh:
        for line in fh:
            f = line.split()
            if not f[2].startswith(("loop", "ram")) and not f[2][-1].isdigit():  # whole disks only
                total += int(f[5]) * 512
    return total


class NodeSampler:
    """Samples the memory and reads of a job's task processes (python -m slurm_apply._node
    with the job directory in its command line) every ``interval_s``."""

    FIELDS = ("Rss", "Pss", "Anonymous", "Private_Clean", "Shared_Clean")

    def __init__(self, job_dir: str, interval_s: float = 0.05) -> None:
        self.needle = job_dir.encode()
        self.interval_s = interval_s
        self.procs: Dict[int, Dict[str, Any]] = {}
        self.by_node_pss: Dict[str, int] = {}
        self.by_node_pss_any: Dict[str, int] = {}
        self.stable_sweeps = 0
        self.sweep = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "NodeSampler":
        self.disk_before = disk_read_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.disk_read = disk_read_bytes() - self.disk_before

    def _loop(self) -> None:
        last: Tuple[frozenset, int] = (frozenset(), 0)
        while not self._stop.is_set():
            self.sweep += 1
            by_node: Dict[str, int] = {}
            seen, rss = set(), 0
            for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
                rec = self._sample(pid)
                if rec is not None:
                    by_node[rec["node"]] = by_node.get(rec["node"], 0) + rec["now"]["Pss"]
                    seen.add(pid)
                    rss += rec["now"]["Rss"]
                    if rec["ppid"] in self.procs and "io_at_fork" not in self.procs[rec["ppid"]]:
                        parent = self.procs[rec["ppid"]]
                        parent["io_at_fork"] = dict(parent["io"])
            # PSS divides a page among the processes mapping it *when read*: summed over a sweep
            # during which pages are being mapped, it over-counts. So only sweeps that found the
            # same processes with the same resident total as the sweep before are counted.
            if seen and (frozenset(seen), rss) == last:
                self.stable_sweeps += 1
                for k, v in by_node.items():
                    self.by_node_pss[k] = max(self.by_node_pss.get(k, 0), v)
            for k, v in by_node.items():
                self.by_node_pss_any[k] = max(self.by_node_pss_any.get(k, 0), v)
            last = (frozenset(seen), rss)
            self._stop.wait(self.interval_s)

    def _sample(self, pid: int) -> Optional[Dict[str, Any]]:
        rec = self.procs.get(pid)
        try:
            if rec is None:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read()
                if b"slurm_apply._node" not in cmd or self.needle not in cmd:
                    return None
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    env = dict(e.split(b"=", 1) for e in fh.read().split(b"\0") if b"=" in e)
                with open(f"/proc/{pid}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                rec = self.procs[pid] = {
                    "task": env.get(b"SLURM_ARRAY_TASK_ID", b"?").decode(), "ppid": ppid,
                    "node": env.get(b"SLURMD_NODENAME", platform.node().encode()).decode(),
                    "max": dict.fromkeys(self.FIELDS, 0), "io": {}}
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                now = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in fh
                                                        if ":" in line and line.split(":")[0] in self.FIELDS)}
            with open(f"/proc/{pid}/io") as fh:
                io = {k: int(v) for k, v in (line.split(":") for line in fh)}
        except (OSError, ValueError, IndexError):  # gone, or between exec and its first look
            return None
        rec.update(now=now, io=io, sweep=self.sweep)
        rec["max"] = {k: max(rec["max"][k], now.get(k, 0)) for k in self.FIELDS}
        return rec

    def _task_io(self, root: Dict[str, Any], children: List[Dict[str, Any]]) -> Dict[str, int]:
        """A task's reads: the root's own until it forked (later the kernel adds each reaped
        child's counts to it), plus each child's last look (S3's rows hold still once they have
        read, so that look comes after the reads)."""
        own = root.get("io_at_fork", root["io"])
        return {k: own.get(k, 0) + sum(c["io"].get(k, 0) for c in children)
                for k in ("rchar", "read_bytes")}

    def report(self) -> Dict[str, Any]:
        tasks: Dict[str, Dict[str, Any]] = {}
        for pid, rec in self.procs.items():
            if rec["ppid"] in self.procs:
                continue  # a child: counted with its task's root below
            kids = [r for r in self.procs.values() if r["ppid"] == pid]
            group = [rec, *kids]
            tasks[rec["task"]] = {"node": rec["node"], "processes": len(group),
                                  "max_rss_kb": max(r["max"]["Rss"] for r in group),
                                  "max_anonymous_kb": max(r["max"]["Anonymous"] for r in group),
                                  **self._task_io(rec, kids)}
        procs = [{"pid": pid, **{k: r[k] for k in ("task", "node", "ppid", "max", "io")}}
                 for pid, r in sorted(self.procs.items())]
        return {"tasks": dict(sorted(tasks.items())), "max_pss_by_node_kb": self.by_node_pss,
                "max_pss_by_node_any_sweep_kb": self.by_node_pss_any, "stable_sweeps": self.stable_sweeps,
                "sweeps": self.sweep, "disk_read_bytes_machine": self.disk_read, "processes": procs}


def _cluster_mem_mb(gb: float) -> int:
    """--mem for an S3 task on the test cluster. It enforces memory the way many sites do
    (jobacct_gather/linux with OverMemoryKill): the sum of its processes' RSS, in which a page
    of a shared mapping counts once for every process that touched it. So a task whose two
    processes each read all of X is charged 2 X (plus the interpreters), however little memory
    the node spends on it; the test cluster's nodes have 4000 MB."""
    need = int(2 * gb * 1024 + 600)
    if need > 4000:
        raise SystemExit(f"--cluster: S3 tasks would be charged about {need} MB (2 x {gb} GB of "
                         "RSS) but the test cluster's nodes have 4000 MB; use --gb 1.5 or less")
    return need


def s3(root: Path, gb: float, backend: str, reps: int) -> Dict[str, Any]:
    jobs = root / f"s3-{backend}"
    jobs.mkdir()
    # Not counted: on this VM the first big write of a run is several times slower than the next
    # (the host backs guest memory touched for the first time), whoever comes first.
    log(f"S3 {backend}: warm-up write of {gb} GB")
    step("save_baseline", where=str(jobs), gb=gb)
    bases: List[Dict[str, Any]] = []
    calls: List[Dict[str, Any]] = []
    for r in range(reps):
        log(f"S3: numpy.save and slurm_apply(), in turn first ({r + 1}/{reps})")
        if r % 2:  # which goes first alternates: each finds the memory the other just freed
            bases.append(step("save_baseline", where=str(jobs), gb=gb))
        calls.append(step("s3_call", jobs=str(jobs), gb=gb, backend=backend, jobname=f"s3_{r}",
                          mem_mb=_cluster_mem_mb(gb) if backend == "slurm" else 0))
        if r < reps - 1:
            shutil.rmtree(calls[-1]["job_dir"])
        if not r % 2:
            bases.append(step("save_baseline", where=str(jobs), gb=gb))
    call = calls[-1]
    job_dir = Path(call["job_dir"])
    pre_kb = peak_rss_kb([sys.executable, "-m", "slurm_apply._node", "--preflight",
                          str(job_dir / "payload.pkl")])
    bare_kb = peak_rss_kb([sys.executable, "-c", "import numpy"])
    evict(job_dir / "payload.buffers")
    with NodeSampler(str(job_dir)) as sampler:
        launched = step("launch", job_dir=str(job_dir), all_at_once=backend == "local")
        log("S3: rows running")
        done = step("s3_finish", job_dir=str(job_dir))
    if done["results"] != call["expected"]:
        raise RuntimeError("S3: the rows' sums differ from the caller's")
    for c in calls:
        c.pop("expected")
    shutil.rmtree(job_dir)
    return {"baseline": bases, "call": calls, "preflight_peak_rss_kb": pre_kb,
            "python_import_numpy_peak_rss_kb": bare_kb, "launch": launched,
            "task_markers": done["tasks"], "nodes": sampler.report()}


def s1(root: Path, rows: int, backend: str, reps: int) -> Dict[str, Any]:
    jobs = root / f"s1-{backend}"
    jobs.mkdir()
    log(f"S1 {backend}: {rows:,} rows end to end")
    run = step("s1_run", jobs=str(jobs), rows=rows, backend=backend)
    out: Dict[str, Any] = {"run": run, "collect": [], "collect_row_by_row": [], "from_records": []}
    for r in range(reps):  # interleaved, each in a fresh process
        log(f"S1: get_output() by column, row by row; DataFrame.from_records ({r + 1}/{reps})")
        out["collect"].append(step("s1_collect", job_dir=run["job_dir"], by_column=True))
        out["collect_row_by_row"].append(step("s1_collect", job_dir=run["job_dir"], by_column=False))
        out["from_records"].append(step("from_records", rows=rows))
    shutil.rmtree(run["job_dir"])
    return out


def med(runs: List[Dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _over(runs: List[Dict[str, Any]]) -> float:
    """Median peak RSS over the process's own before the call, in MB."""
    return statistics.median((r["peak_rss_kb"] - r["baseline_rss_kb"]) / 1024 for r in runs)


def rows_of(name: str, r: Dict[str, Any]) -> List[List[Any]]:
    """[workload, figure, slurm_apply, baseline, baseline name, ratio, target, PASS/FAIL]."""
    out: List[List[Any]] = []

    def add(fig: str, value: float, base: Optional[float], base_name: str, target: Optional[float]) -> None:
        ratio = value / base if base else None
        ok = "" if target is None or ratio is None else ("PASS" if ratio < target else "FAIL")
        out.append([name, fig, value, base, base_name, ratio, target, ok])

    if name.startswith("S3"):
        c, b, n = r["call"], r["baseline"], r["nodes"]
        payload_mb = c[-1]["payload_bytes"] / MB
        add("slurm_apply(submit=False) s", med(c, "call_s"), med(b, "save_s"), "numpy.save s", 1.5)
        add("slurm_apply(submit=False) until its buffers are on disk s", med(c, "durable_s"),
            med(b, "save_fsync_s"), "numpy.save + fsync s", None)
        add("then launching the tasks s", r["launch"]["launch_s"], None, "", None)
        add("caller peak RSS MB", med(c, "peak_rss_kb") / 1024, payload_mb, "payload MB", 1.3)
        add("caller peak RSS over its RSS before the call MB",
            statistics.median((x["peak_rss_kb"] - x["rss_before_call_kb"]) / 1024 for x in c),
            payload_mb, "payload MB", None)
        add("pre-flight peak RSS MB", r["preflight_peak_rss_kb"] / 1024, payload_mb, "payload MB", None)
        add("pre-flight peak RSS MB", r["preflight_peak_rss_kb"] / 1024,
            r["python_import_numpy_peak_rss_kb"] / 1024, "python -c 'import numpy' MB", None)
        for node, kb in sorted(n["max_pss_by_node_kb"].items()):
            k = sum(1 for t in n["tasks"].values() if t["node"] == node)
            add(f"node {node}: PSS of its {k} tasks' processes MB", kb / 1024, payload_mb, "payload MB", 1.3)
        add("disk reads of the whole machine while the rows ran MB", n["disk_read_bytes_machine"] / MB,
            payload_mb, "payload MB", None)
        for task, t in n["tasks"].items():
            add(f"task {task}: largest RSS of its {t['processes']} processes MB", t["max_rss_kb"] / 1024,
                payload_mb, "payload MB", None)
            add(f"task {task}: largest private memory of a process MB", t["max_anonymous_kb"] / 1024,
                payload_mb, "payload MB", None)
            add(f"task {task}: read_bytes MB", t["read_bytes"] / MB, payload_mb, "payload MB", None)
            add(f"task {task}: rchar (through read()) MB", t["rchar"] / MB, payload_mb, "payload MB", None)
    else:
        run, col, row, fr = r["run"], r["collect"], r["collect_row_by_row"], r["from_records"]
        table_mb = col[0]["table_bytes"] / MB
        fr_s = med(fr, "from_records_s")
        add("end to end s (submit, wait, get_output)", run["end_to_end_s"], None, "", None)
        add("get_output() s, in that run", run["collect_s"], fr_s, "from_records s", 1.0)
        add("get_output() s, fresh process", med(col, "collect_s"), fr_s, "from_records s", 1.0)
        add("get_output() s, row by row (the path before)", med(row, "collect_s"), fr_s, "from_records s", None)
        add("get_output(): peak RSS over the process's before MB", _over(col), table_mb, "table MB", 3.0)
        add("row by row (before): peak RSS over the process's before MB", _over(row), table_mb, "table MB", None)
        add("from_records: peak RSS over the process's before (dicts built) MB", _over(fr), table_mb,
            "table MB", None)
    return out


def render(rows: List[List[Any]]) -> str:
    def fmt(v: Any) -> str:
        return "–" if v is None or v == "" else f"{v:,.3f}" if isinstance(v, float) else str(v)

    head = ["Workload", "Figure", "slurm_apply", "baseline", "baseline is", "ratio", "target <", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--only", default="S3,S1", help="comma-separated subset of S3,S1")
    ap.add_argument("--gb", type=float, help="S3's array size in GiB (default 2; 1 with --cluster)")
    ap.add_argument("--rows", type=int, default=10_000_000, help="S1's rows (default 10,000,000)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the timed calls (medians)")
    ap.add_argument("--cluster", action="store_true",
                    help="run on the private Slurm cluster of tests/testbed.py (3 nodes x 2 CPUs) "
                         "instead of the local backend")
    args = ap.parse_args(argv)
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    root = Path(tempfile.mkdtemp(prefix="sas-", dir="/tmp"))
    os.chmod(root, 0o755)
    # The whole run measures the library as it was at its start, here and on the nodes.
    shutil.copytree(REPO / "slurm_apply", root / "lib" / "slurm_apply",
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "lib"), os.environ.get("PYTHONPATH")]))
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    res: Dict[str, Any] = {"meta": {
        "command": " ".join(["python bench/scale.py", *(sys.argv[1:] if argv is None else argv)]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": commit,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()}, "load_average_start": os.getloadavg()},
        "workloads": {}}
    cluster = None
    backend = "slurm" if args.cluster else "local"
    try:
        if args.cluster:
            sys.path.insert(0, str(REPO / "tests"))
            import testbed

            cluster = testbed.SlurmCluster(root / "c", nodes=3, cpus_per_node=2, accounting=False, name="scale")
            log(f"starting a private Slurm cluster under {root}")
            cluster.start()
            os.environ.update(cluster.env())
        os.chdir(root)  # tasks run where the caller was: not in the checkout
        gb = args.gb or (1.0 if args.cluster else 2.0)
        for name, run in (("S3", lambda: s3(root, gb, backend, args.reps)),
                          ("S1", lambda: s1(root, args.rows, backend, args.reps))):
            if name in only:
                res["workloads"][f"{name} {backend}"] = run()
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    res["meta"]["load_average_end"] = os.getloadavg()
    table = [row for name, r in res["workloads"].items() for row in rows_of(name, r)]
    res["table"] = table
    out = HERE / "results" / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(render(table))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
