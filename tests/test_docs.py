"""The README documents every CLI command and the public API it promises."""

from __future__ import annotations

from pathlib import Path

import slurm_apply
from slurm_apply.cli import cli

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_command_is_in_the_readme():
    missing = [name for name in cli.commands if f"`{name}" not in README and f"slurm-apply {name}" not in README]
    assert missing == []


def test_the_readme_names_the_handle_methods():
    for method in ("get_job_status", "wait", "get_output", "resubmit", "cancel", "cleanup_files", "from_dir",
                   "write_output", "task_logs"):
        assert hasattr(slurm_apply.SlurmJob, method)
        assert f"{method}(" in README, method


def test_the_readme_gives_the_two_commands():
    assert "python examples/tune_gbm.py" in README and "bash tests/run.sh" in README
    assert "bash tests/run.sh" in (Path(__file__).parent.parent / ".ci" / "run").read_text()


def test_the_readme_names_every_public_name_but_the_exceptions():
    missing = [name for name in slurm_apply.__all__
               if not name.endswith("Error") and name != "RemoteTraceback" and name not in README]
    assert missing == []
