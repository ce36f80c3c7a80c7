#!/usr/bin/env bash
# The whole test suite, real Slurm cluster included, from a fresh machine:
#   bash tests/run.sh [pytest args]
# Installs the package with its test extras and, when run as root on Debian/Ubuntu, the Slurm
# packages the suite's private cluster is started from (slurmctld, slurmd, slurmdbd, munge,
# MariaDB). The suite itself starts and stops the clusters; nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

need=(slurmctld slurmd sbatch sacct munged slurmdbd mariadbd)
missing=0
for exe in "${need[@]}"; do
    command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || missing=1
done
if [ "$missing" = 1 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing Debian's Slurm packages for the private test cluster" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends \
            slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
    else
        echo "tests/run.sh: Slurm is not installed and this is not root with apt-get;" \
             "tests that need the cluster will say so (and fail under CI=true)" >&2
    fi
fi

# The project's rules, before any test: the layers (import-linter contracts in pyproject.toml),
# ruff and mypy (their settings are in pyproject.toml too).
echo "tests/run.sh: checking the layers (lint-imports), ruff and mypy" >&2
lint-imports --no-cache
python3 -m ruff check slurm_apply tests bench examples
python3 -m mypy

exec python3 -m pytest "$@"
