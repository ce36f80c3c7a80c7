"""Everything Slurm owns in a job script lives in its backend (``slurm_apply/_backends/slurm/``):
a second scheduler is added beside it without touching the generic layers. The import rules are
import-linter's (pyproject.toml); this checks the text: no module elsewhere writes an #SBATCH
line, reads Slurm's task variables, runs sbatch or holds Slurm's time and memory forms."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import slurm_apply

PACKAGE = Path(slurm_apply.__file__).parent
SLURM_BACKEND = PACKAGE / "_backends" / "slurm"
SGE_BACKEND = PACKAGE / "_backends" / "sge"

# Words only Slurm's backend may write: its script header, its task variables, its command line.
SLURM_WORDS = ("#SBATCH", "SLURM_ARRAY", "SLURM_JOB", "SLURMD_", "SLURM_RESTART", "sbatch --")
# Slurm's time and memory forms: defined, or imported from where they once were generic.
# (_status/classify.py has a mem_text of its own: a TaskRecord's sizes in MiB, for the status.)
SLURM_FORMS = re.compile(r"^def (time_s|time_text|mem_mb|mem_per)\(|_backends\.resources\b|"
                         r"from \.+_backends import resources\b|from \.+ import resources\b", re.M)


def _outside_slurm() -> List[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if SLURM_BACKEND not in p.parents)


def test_the_modules_are_found():
    found = {p.relative_to(PACKAGE).as_posix() for p in _outside_slurm()}
    assert {"_launch/script.py", "_node/__main__.py", "_job/retry_plan.py", "_backends/local/backend.py"} <= found
    assert not any(name.startswith("_backends/slurm/") for name in found)


def test_no_module_outside_the_slurm_backend_knows_slurms_script_forms():
    hits = []
    for path in _outside_slurm():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            hits += [f"{path.relative_to(PACKAGE)}:{n}: {word!r} in {line.strip()!r}"
                     for word in SLURM_WORDS if word in line]
    assert not hits, "Slurm's own words outside _backends/slurm/ (move them behind the dialect):\n" + "\n".join(hits)


def test_slurms_time_and_memory_forms_live_in_its_backend():
    # Grid Engine's backend has time and memory forms of its own, under the same names.
    hits = [f"{path.relative_to(PACKAGE)}: {m.group(0)!r}"
            for path in _outside_slurm() if SGE_BACKEND not in path.parents
            for m in SLURM_FORMS.finditer(path.read_text())]
    assert not hits, "Slurm's time/memory forms outside _backends/slurm/ (use the dialect):\n" + "\n".join(hits)
    assert SLURM_FORMS.search((SLURM_BACKEND / "resources.py").read_text())  # the pattern finds them there


# Words only Grid Engine's backend (and the registry, which names every backend) may write: its
# submit command, its script header, its variables, its accounting command.
SGE_WORDS = ("qsub", "SGE_", "#$ ", "qacct")
REGISTRY = PACKAGE / "_backends" / "__init__.py"


def _outside_sge() -> List[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if SGE_BACKEND not in p.parents and p != REGISTRY)


def test_no_module_outside_the_sge_backend_knows_grid_engine():
    found = {p.relative_to(PACKAGE).as_posix() for p in _outside_sge()}
    assert "_launch/script.py" in found and not any(n.startswith("_backends/sge/") for n in found)
    hits = []
    for path in _outside_sge():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            hits += [f"{path.relative_to(PACKAGE)}:{n}: {word!r} in {line.strip()!r}"
                     for word in SGE_WORDS if word in line]
    assert not hits, "Grid Engine's words outside _backends/sge/ (move them behind the dialect):\n" + "\n".join(hits)
    assert any(word in (SGE_BACKEND / "script.py").read_text() for word in SGE_WORDS)  # the words are found there
