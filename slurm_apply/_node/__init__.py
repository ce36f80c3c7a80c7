"""What runs in an array task: ``python -m slurm_apply._node JOB_DIR SUBMISSION TOKEN``.

``task.py`` is the task's parent process (its processes, which row each one runs, replacements,
SIGTERM forwarding), ``rows.py`` the row loop of each process, ``lease.py`` heartbeats and the
taking over of a dead task's chunks; what a task writes goes through ``_store/taskfiles.py``.
"""
