"""Every timing constant of the package, in one place, with how they relate (a leaf module).

On the nodes (the task's parent and its processes):

* HEARTBEAT_S: a task touches its heartbeat this often. LEASE_S: a heartbeat older than this
  means its task is dead; far above HEARTBEAT_S (x10), so a busy node or a slow file system
  does not make a live task look dead (its rows would run twice).
* SCAN_S: how often a task with an idle process looks for dead tasks.
* LINGER_S: how long a task out of rows stays to take over from tasks that die meanwhile: a
  lease and two scans, so a death just before it ran out of rows is still seen.
* linger_poll_s(n_tasks): how often a lingering task looks again, LINGER_POLL_PER_TASK_S for
  each task of its submission, between LINGER_POLL_MIN_S and LINGER_POLL_MAX_S: up to 50 tasks
  (where the product reaches the maximum) a submission's lingering tasks list its tasks
  directory at most 1 / LINGER_POLL_PER_TASK_S times a second together, beyond that each once
  every LINGER_POLL_MAX_S (as before); a small job ends within LINGER_POLL_MIN_S of its last row
  (its end waits for them); LINGER_POLL_MAX_S <= HEARTBEAT_S.
* STOP_WAIT_S: after SIGTERM, the task's processes save their finished rows within this.
  STOP_GRACE_S: the local runner sends SIGKILL this long after SIGTERM. Both stay below Slurm's
  KillWait (30 s by default), and STOP_WAIT_S <= STOP_GRACE_S, so rows are saved before a kill.
* RECORD_WRITE_S: finished rows are appended to the task's record at least this often;
  RECORD_FSYNC_S: and made durable this often (what a node failure may cost).
* PUBLISH_S, CHECK_S: with max_failures, a process publishes its count of rows that raised, and
  looks at the stop note, at most this often.
* LOCAL_POLL_S: how often the local runner looks at its tasks.

On the login side:

* WAIT_POLL_S growing to WAIT_MAX_POLL_S: how often wait() looks at the result files;
  WAIT_SCHEDULER_S growing to WAIT_MAX_SCHEDULER_S: how often it asks the scheduler.
* MARKER_GRACE_S: how long a task the scheduler calls finished may go without a visible end
  marker before it is taken to be missing. NFS caches a directory's attributes for up to 60 s
  (acdirmax), but the marker is written with an fsync and a rename, which most clients see
  within a few seconds: a compromise between a false FAILED and a slow verdict.
* SETTLE_S: how long a follow-up waits for the scheduler to say every task has ended.
"""

HEARTBEAT_S = 2.0
LEASE_S = 20.0
SCAN_S = 5.0
LINGER_S = LEASE_S + 2 * SCAN_S
LINGER_POLL_MIN_S = 0.05
LINGER_POLL_PER_TASK_S = 0.02
LINGER_POLL_MAX_S = 1.0
STOP_WAIT_S = 10.0
STOP_GRACE_S = 10.0
SLURM_KILL_WAIT_S = 30.0  # Slurm's default KillWait, for the relations below
RECORD_WRITE_S = 0.02
RECORD_FSYNC_S = 1.0
PUBLISH_S = 0.2
CHECK_S = 0.1
LOCAL_POLL_S = 0.02

WAIT_POLL_S = 0.05
WAIT_MAX_POLL_S = 1.0
WAIT_SCHEDULER_S = 5.0
WAIT_MAX_SCHEDULER_S = 30.0
MARKER_GRACE_S = 30.0
SETTLE_S = 420.0


def linger_poll_s(n_tasks: int) -> float:
    """How often a lingering task of a submission of ``n_tasks`` tasks looks again."""
    return min(max(n_tasks * LINGER_POLL_PER_TASK_S, LINGER_POLL_MIN_S), LINGER_POLL_MAX_S)


def relations() -> dict:
    """The relations above, each True when it holds (a test checks them all)."""
    return {
        "a lease is many heartbeats": LEASE_S >= 10 * HEARTBEAT_S,
        "a lingering task outlasts a lease and a scan": LINGER_S > LEASE_S + SCAN_S,
        "a lingering task looks at least once a heartbeat": LINGER_POLL_MIN_S <= LINGER_POLL_MAX_S <= HEARTBEAT_S,
        "up to 50 tasks, lingering tasks look at most 50 times a second together":
            1 / LINGER_POLL_PER_TASK_S <= 50 and LINGER_POLL_MAX_S / LINGER_POLL_PER_TASK_S >= 50,
        "rows are saved before the runner kills": STOP_WAIT_S <= STOP_GRACE_S < SLURM_KILL_WAIT_S,
        "records are written before they are synced": RECORD_WRITE_S < RECORD_FSYNC_S,
        "wait() polls files faster than the scheduler": WAIT_MAX_POLL_S <= WAIT_SCHEDULER_S <= WAIT_MAX_SCHEDULER_S,
    }
