"""The package's own names for the state of a task, whatever scheduler runs it.

Every backend answers in these (``TaskRecord.state``): it translates its scheduler's names
(Slurm's CONFIGURING is RUNNING here, REVOKED is CANCELLED, ...), so nothing above the backends
knows a scheduler's vocabulary. A name a backend cannot translate (a state a newer scheduler
added) is passed on as the scheduler printed it, and read as ended.

The status adds four of its own on top (LOST aside, which a backend may answer too):
COMPLETING, UNKNOWN and NOT_SUBMITTED; see :mod:`slurm_apply._status.classify`.
"""

from __future__ import annotations

# Queued or running: the task may still run rows.
PENDING = "PENDING"
RUNNING = "RUNNING"
SUSPENDED = "SUSPENDED"  # stopped by the scheduler, to be resumed
REQUEUED = "REQUEUED"  # put back in the queue, to run again

# Ended.
COMPLETED = "COMPLETED"  # its script exited 0
FAILED = "FAILED"  # its script exited non-zero
TIMEOUT = "TIMEOUT"  # killed at its time limit
OUT_OF_MEMORY = "OUT_OF_MEMORY"  # killed at its memory limit
NODE_FAIL = "NODE_FAIL"  # its node died under it
CANCELLED = "CANCELLED"  # cancelled by a user or an administrator
PREEMPTED = "PREEMPTED"  # made way for a job with a higher priority
BOOT_FAIL = "BOOT_FAIL"  # its node could not be started
DEADLINE = "DEADLINE"  # its deadline passed before it could end
LOST = "LOST"  # gone, with nothing to say what became of it
# Killed by a signal from outside, neither by cancel() nor at a limit of its own (a scheduler
# that cannot tell an administrator's kill, someone's qdel and the kernel's out-of-memory
# killer apart says so): another run may survive it, so its rows are retried.
KILLED = "KILLED"

# It has left the queue and the scheduler has not yet written the record of how it ended (Grid
# Engine's accounting lags its queue): a task in it may still be answered for. The status shows
# it as its own COMPLETING, with the backend's reason.
COMPLETING = "COMPLETING"

#: a task in one of these may still run rows
ACTIVE = (PENDING, RUNNING, REQUEUED, SUSPENDED)
#: a task in one of these has ended
ENDED = (COMPLETED, FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, CANCELLED, PREEMPTED, BOOT_FAIL,
         DEADLINE, LOST, KILLED)
