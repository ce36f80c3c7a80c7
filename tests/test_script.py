"""submit.sh is text built from data: checked against expected text, against sbatch's rules for
#SBATCH lines, against bash itself, and (when sbatch is installed) against sbatch's own parser."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from slurm_apply import InputError
from slurm_apply._backends import dialect
from slurm_apply._backends.slurm.script import directive_value, normalize_key, option_line
from slurm_apply._launch import script as _script

SLURM = dialect("slurm")


def render(*, log_pattern: Path, **kwargs: object) -> str:
    """The array script as written for Slurm; ``log_pattern`` has %a for the task's index."""
    return _script.render(dialect=SLURM, log=lambda index: Path(str(log_pattern).replace("%a", index)),
                          **kwargs)  # type: ignore[arg-type]


def render_followup(**kwargs: object) -> str:
    return _script.render_followup(dialect=SLURM, **kwargs)  # type: ignore[arg-type]

HOSTILE_VALUES = [
    "two words",
    "it's",
    'say "hi"',
    """both ' and " quotes""",
    "semi;colon && echo no",
    "$(touch pwned)",
    "`touch pwned`",
    "${HOME} $HOME",
    "back\\slash",
    "trailing backslash\\",
    "\\\"",
    "# not a comment",
    "a#b",
    "  leading and trailing  ",
    "*?[glob]",
    "tab-free | pipe > redirect < in",
    "ünïcödé",
]


def sbatch_split(text: str) -> List[str]:
    """How sbatch splits the rest of an #SBATCH line into arguments: a transcription of
    ``_get_argument`` in Slurm's src/sbatch/opt.c, the oracle for the quoting rules."""
    args: List[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] == "#":
            break
        arg: List[str] = []
        quote: Optional[str] = None
        escaped = False
        while i < n and (quote or not text[i].isspace()) and text[i] != "\n":
            ch = text[i]
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
                i += 1
                continue
            elif quote:
                if ch == quote:
                    quote = None
                    i += 1
                    continue
            elif ch in "\"'":
                quote = ch
                i += 1
                continue
            elif ch == "#":
                i = n  # the rest of the line is a comment
                break
            arg.append(ch)
            i += 1
        assert quote is None, f"sbatch would stop on an unmatched {quote} in {text!r}"
        if arg:
            args.append("".join(arg))
    return args


def sbatch_lines(script: str) -> List[List[str]]:
    return [sbatch_split(line[len("#SBATCH"):]) for line in script.splitlines() if line.startswith("#SBATCH")]


def _render(**over: object) -> str:
    kwargs: Dict[str, object] = dict(
        jobname="fit", n_tasks=3, cpus_per_task=2,
        log_pattern=Path("/jobs/_rslurm_fit/logs/s0_t%a.out"), options={}, python="/usr/bin/python3",
        job_dir=Path("/jobs/_rslurm_fit"), sub=0, token="3f9a", workdir=Path("/home/u/proj"),
        pythonpath="/home/u/proj", max_concurrent=None)
    kwargs.update(over)
    return render(**kwargs)  # type: ignore[arg-type]


def test_render_gives_the_expected_script() -> None:
    text = _render(options={"time": "1:00:00", "mem": 4000, "p": "debug", "exclusive": True,
                            "requeue": False, "comment": "fit the models"}, max_concurrent=2)
    assert text == (
        "#!/bin/bash\n"
        "# slurm_apply array job: submission 0 of fit\n"
        "#SBATCH --array=0-2%2\n"
        "#SBATCH --job-name=fit\n"
        "#SBATCH --cpus-per-task=2\n"
        "#SBATCH --output=/jobs/_rslurm_fit/logs/s0_t%a.out\n"
        "#SBATCH --open-mode=append\n"
        "#SBATCH --time=1:00:00\n"
        "#SBATCH --mem=4000\n"
        "#SBATCH -p debug\n"
        "#SBATCH --exclusive\n"
        '#SBATCH --comment="fit the models"\n'
        "\n"
        "set -e\n"
        'export SLURM_APPLY_TASK="${SLURM_ARRAY_TASK_ID-}"\n'
        'export SLURM_APPLY_JOB_ID="${SLURM_JOB_ID-}"\n'
        'export SLURM_APPLY_ARRAY_JOB_ID="${SLURM_ARRAY_JOB_ID-}"\n'
        'export SLURM_APPLY_RESTARTS="${SLURM_RESTART_COUNT-}"\n'
        'export SLURM_APPLY_NODE="${SLURMD_NODENAME-}"\n'
        "cd /home/u/proj\n"
        "export PYTHONPATH=/home/u/proj${PYTHONPATH:+:$PYTHONPATH}\n"
        "exec /usr/bin/python3 -m slurm_apply._node /jobs/_rslurm_fit 0 3f9a\n"
    )


def test_a_later_submission_has_its_own_number_and_no_pythonpath_line_when_none() -> None:
    text = _render(sub=2, pythonpath=None, log_pattern=Path("/jobs/_rslurm_fit/logs/s2_t%a.out"))
    assert "#SBATCH --output=/jobs/_rslurm_fit/logs/s2_t%a.out\n" in text
    assert "PYTHONPATH" not in text
    assert text.endswith("exec /usr/bin/python3 -m slurm_apply._node /jobs/_rslurm_fit 2 3f9a\n")


@pytest.mark.parametrize("value, expected", [
    ("debug", "debug"),
    ("1:00:00", "1:00:00"),
    ("gpu:a100:2", "gpu:a100:2"),
    ("n[01-04],n07", "n[01-04],n07"),
    ("ALL,FOO=bar", "ALL,FOO=bar"),
    ("a b", '"a b"'),
    ("it's", '"it\'s"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("#x", '"#x"'),
    ("$(touch pwned)", '"$(touch pwned)"'),
])
def test_directive_value_examples(value: str, expected: str) -> None:
    assert directive_value(value) == expected


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_sbatch_reads_back_exactly_the_value(value: str) -> None:
    assert sbatch_split("--comment=" + directive_value(value)) == ["--comment=" + value]
    assert sbatch_split("-p " + directive_value(value)) == ["-p", value]


@pytest.mark.parametrize("value", ["a\nb", "a\r", "nul\x00", "tab\there", "del\x7f", "nel\x85", "ls\u2028"])
def test_directive_value_refuses_control_characters(value: str) -> None:
    with pytest.raises(InputError, match="a newline or other control character"):
        directive_value(value)


def test_option_lines() -> None:
    assert option_line("time", "1:00") == "#SBATCH --time=1:00"
    assert option_line("mem-per-cpu", 2000) == "#SBATCH --mem-per-cpu=2000"
    assert option_line("p", "debug") == "#SBATCH -p debug"  # --p= would be an ambiguous abbreviation
    assert option_line("p", "my part") == '#SBATCH -p "my part"'
    assert option_line("exclusive", True) == "#SBATCH --exclusive"
    assert option_line("x", True) == "#SBATCH -x"
    assert option_line("requeue", False) is None
    assert option_line("requeue", None) is None
    for bad in ("", "a b", "time\n", "--time", "a=b", "x;y"):
        with pytest.raises(InputError):
            option_line(bad, "1")


@pytest.mark.parametrize("key, expected", [
    ("time", "time"), ("--time", "time"), ("mem_per_cpu", "mem-per-cpu"), ("job_name", "job-name"),
    ("J", "job-name"), ("-J", "job-name"), ("a", "array"), ("A", "A"), ("c", "cpus-per-task"),
    ("C", "C"), ("o", "output"), ("e", "error"), ("p", "p"),
])
def test_normalize_key(key: str, expected: str) -> None:
    assert normalize_key(key) == expected


def test_a_percent_in_the_directory_is_doubled_for_the_output_pattern() -> None:
    text = _render(log_pattern=Path("/jobs/100%/_rslurm_fit/logs/s0_t%a.out"))
    assert "#SBATCH --output=/jobs/100%%/_rslurm_fit/logs/s0_t%a.out\n" in text


def _hostile_render(tmp_path: Path) -> Dict[str, object]:
    nasty = "sp ace 'sq' \"dq\" ;semi $(touch pwned) `touch pwned` #h %p \\bs"
    job_dir = tmp_path / f"jobs {nasty}" / "_rslurm_fit"
    return dict(
        jobname="fit", n_tasks=2, cpus_per_task=1, log_pattern=job_dir / "logs" / "s0_t%a.out",
        options={"comment": nasty, "p": "a b", "mail-user": "o'brien@example.org", "exclusive": True},
        python=str(tmp_path / f"bin {nasty}" / "python"), job_dir=job_dir, sub=0, token="t0k",
        workdir=tmp_path / f"work {nasty}", pythonpath=f"{tmp_path}/pp {nasty}", max_concurrent=None)


def test_hostile_values_render_to_a_script_bash_and_sbatch_read_as_meant(tmp_path: Path) -> None:
    args = _hostile_render(tmp_path)
    text = render(**args)  # type: ignore[arg-type]
    script = tmp_path / "submit.sh"
    script.write_text(text)
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    log_pattern = str(args["log_pattern"])
    directory, _, name = log_pattern.rpartition("/")
    assert sbatch_lines(text) == [
        ["--array=0-1"], ["--job-name=fit"], ["--cpus-per-task=1"],
        [f"--output={directory.replace('%', '%%')}/{name}"], ["--open-mode=append"],
        [f"--comment={args['options']['comment']}"], ["-p", "a b"],  # type: ignore[index]
        ["--mail-user=o'brien@example.org"], ["--exclusive"],
    ]


def test_bash_runs_the_hostile_script_with_every_value_intact(tmp_path: Path) -> None:
    """Run the shell part for real, with a stand-in python that reports what it was given."""
    args = _hostile_render(tmp_path)
    python = Path(str(args["python"]))
    python.parent.mkdir(parents=True)
    python.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'pythonpath': os.environ.get('PYTHONPATH')},"
        " open(os.environ['REPORT'], 'w'))\n")
    python.chmod(0o755)
    workdir = Path(str(args["workdir"]))
    workdir.mkdir()
    script = tmp_path / "submit.sh"
    script.write_text(render(**args))  # type: ignore[arg-type]
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["REPORT"] = str(report)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.run(["bash", str(script)], cwd=run_dir, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(report.read_text())
    assert got == {"argv": ["-m", "slurm_apply._node", str(args["job_dir"]), "0", "t0k"],
                   "cwd": str(workdir), "pythonpath": args["pythonpath"]}
    assert not list(tmp_path.rglob("pwned"))


def test_the_script_tells_the_task_what_it_is_in_neutral_variables(tmp_path: Path) -> None:
    """From Slurm's variables, each one set: a stale value inherited from the submitting
    environment (sbatch exports it) never reaches the task."""
    args = _hostile_render(tmp_path)
    python = Path(str(args["python"]))
    python.parent.mkdir(parents=True)
    python.write_text(
        f"#!{sys.executable}\n"
        "import json, os\n"
        "json.dump({k: v for k, v in os.environ.items() if k.startswith('SLURM_APPLY_')},"
        " open(os.environ['REPORT'], 'w'))\n")
    python.chmod(0o755)
    Path(str(args["workdir"])).mkdir()
    script = tmp_path / "submit.sh"
    script.write_text(render(**args))  # type: ignore[arg-type]
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.update(REPORT=str(report), SLURM_ARRAY_TASK_ID="3", SLURM_JOB_ID="107", SLURM_ARRAY_JOB_ID="104",
               SLURMD_NODENAME="n2", SLURM_APPLY_RESTARTS="9")  # no SLURM_RESTART_COUNT: a first start
    subprocess.run(["bash", str(script)], env=env, check=True, timeout=30)
    assert json.loads(report.read_text()) == {
        "SLURM_APPLY_TASK": "3", "SLURM_APPLY_JOB_ID": "107", "SLURM_APPLY_ARRAY_JOB_ID": "104",
        "SLURM_APPLY_RESTARTS": "", "SLURM_APPLY_NODE": "n2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sbatch_parsed_options(script: Path, tmp_path: Path) -> Dict[str, str]:
    """The options sbatch itself reads from a script (``sbatch -v`` lists them before it contacts
    the controller; a config naming a port nobody listens on keeps it from submitting anything)."""
    conf = tmp_path / "parse-only-slurm.conf"
    conf.write_text(
        "ClusterName=parseonly\nSlurmctldHost=localhost\n"
        f"SlurmctldPort={_free_port()}\nAuthType=auth/none\nCredType=cred/none\n"
        "NodeName=n1 CPUs=2 State=UNKNOWN\nPartitionName=p Nodes=n1 Default=YES\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    proc = subprocess.Popen(["sbatch", "-v", str(script)], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: List[str] = []
    options: Dict[str, str] = {}
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "end of defined options" in line:
                break
            m = re.match(r"sbatch: (\S+)\s+: (.*)$", line.rstrip("\n"))
            if m:
                options[m.group(1)] = m.group(2)
        else:
            pytest.fail("sbatch did not list its options: " + "".join(seen)[-500:])
    finally:
        proc.kill()  # it would now retry the made-up controller for seconds
        proc.wait()
    return options


def test_sbatch_itself_reads_every_value_back(tmp_path: Path) -> None:
    if shutil.which("sbatch") is None:  # tests/run.sh installs it; CI must not pass without it
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("sbatch is not installed, so sbatch's own reading of #SBATCH lines is unchecked")
        pytest.skip("sbatch is not installed (bash tests/run.sh installs it)")
    args = _hostile_render(tmp_path)
    nasty = args["options"]["comment"]  # type: ignore[index]
    script = tmp_path / "submit.sh"
    script.write_text(render(**args))  # type: ignore[arg-type]
    options = sbatch_parsed_options(script, tmp_path)
    log_pattern = str(args["log_pattern"])
    directory, _, name = log_pattern.rpartition("/")
    assert options["comment"] == nasty
    assert options["partition"] == "a b"
    assert options["mail-user"] == "o'brien@example.org"
    assert options["job-name"] == "fit"
    assert options["array"] == "0-1"
    assert options["cpus-per-task"] == "1"
    assert options["output"] == f"{directory.replace('%', '%%')}/{name}"


def test_the_follow_up_script_goes_where_the_array_went_and_runs_the_retry_decision(tmp_path):
    job_dir = tmp_path / "it's a dir" / "_rslurm_x"
    text = render_followup(
        jobname="x", log=job_dir / "logs" / "s0_retry.out", python="/opt/py 3/bin/python",
        options={"partition": "long", "A": "lab", "mem": "4G", "time": "1:00:00", "gres": "gpu:1"},
        job_dir=job_dir, sub=0, token="abc", workdir=tmp_path, pythonpath=None,
        setup=["module load python"], mem="768M", time="00:15:00")
    lines = text.splitlines()
    assert [ln for ln in lines if ln.startswith("#SBATCH")] == [
        "#SBATCH --job-name=x.retry", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=768M",
        "#SBATCH --time=00:15:00", f'#SBATCH --output="{job_dir}/logs/s0_retry.out"',
        "#SBATCH --open-mode=append", "#SBATCH --partition=long", "#SBATCH -A lab"]
    assert "module load python" in lines
    assert lines[-1] == (f"exec '/opt/py 3/bin/python' -m slurm_apply._job.followup "
                         f"'{tmp_path}/it'\"'\"'s a dir/_rslurm_x' 0 abc")
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)  # valid bash

