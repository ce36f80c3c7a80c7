"""A resubmission: the rows without a result (and, if asked, those that raised), derived from
the previous submission so that everything not overridden is inherited."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, Optional

from ._store import layout as jd
from . import _submit
from . import _validate as v
from ._errors import InputError, JobActiveError
from ._store.manifest import WRITTEN, merge_options, ranges

if TYPE_CHECKING:
    from ._job import SlurmJob


def resubmit(job: "SlurmJob", *, failed: bool, nodes: Optional[int], cpus_per_node: Optional[int],
             slurm_options: Optional[Dict[str, Any]], max_concurrent: Optional[int], submit: bool,
             force: bool) -> None:
    nodes = v.check_optional_positive_int("nodes", nodes)
    cpus = v.check_optional_positive_int("cpus_per_node", cpus_per_node)
    max_concurrent = v.check_optional_positive_int("max_concurrent", max_concurrent)
    options = v.check_options(slurm_options)
    status = job.get_job_status()
    if not force:
        job.refuse_if_active("resubmit", status)
    written = [s for s in job.manifest.submissions if s.state == WRITTEN and not s.launched]
    if written:
        raise JobActiveError(
            f"submission {written[-1].index} of {job.jobname} was written but never submitted "
            f"(submit=False): run `sbatch {job.job_dir / written[-1].script}` to submit it, "
            "rather than resubmitting")
    rows = sorted(status.missing_rows + (status.failed_rows if failed else []))
    if not rows:
        what = ("has a result" if failed or not status.failed_rows
                else "has a result or an error (pass failed=True to rerun errors)")
        raise InputError(f"nothing to resubmit: every row of {job.jobname} {what}")
    import pandas as pd

    params = pd.read_pickle(job.job_dir / jd.PARAMS)
    with jd.manifest_lock(job.job_dir):
        manifest = jd.load_manifest(job.job_dir)
        prev = manifest.latest
        sub = prev.derive(
            index=len(manifest.submissions), rows=ranges(rows), n_rows=len(rows),
            nodes=nodes or prev.nodes, cpus_per_task=cpus or prev.cpus_per_task,
            slurm_options=merge_options(prev.slurm_options, options),
            max_concurrent=max_concurrent if max_concurrent is not None else prev.max_concurrent,
            written_at=time.time())
        _submit.write_submission(job.job_dir, manifest, params, sub)
        jd.save_manifest(job.job_dir, manifest)
        if submit:
            _submit.launch(job.job_dir, manifest, sub.index)
