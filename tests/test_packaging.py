"""What a user installs: one version, a clean tree."""

import subprocess
from importlib import metadata
from pathlib import Path

import slurm_apply

REPO = Path(__file__).resolve().parent.parent


def test_the_installed_version_is_the_packages_own():
    # pyproject.toml reads the version from slurm_apply.__version__: they cannot disagree.
    assert metadata.version("slurm_apply") == slurm_apply.__version__


def test_slurm_logs_written_in_the_checkout_are_ignored():
    # sbatch run by hand in the checkout writes slurm-<id>.out there; none may be committed.
    tracked = subprocess.run(["git", "ls-files", "slurm-*.out"], cwd=REPO, capture_output=True, text=True)
    assert tracked.returncode == 0 and tracked.stdout == ""
    ignored = subprocess.run(["git", "check-ignore", "-q", "slurm-1.out"], cwd=REPO)
    assert ignored.returncode == 0
