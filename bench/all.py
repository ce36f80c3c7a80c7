"""Every benchmark in one command: W1-W4 and WAIT against rslurm on the private Slurm cluster
(bench/run.py), then the big jobs S3 and S1's collection (bench/scale.py) and S1's status, S2
and S4 (bench/scale2.py), one after the other so that none skews another's timings.

    python bench/all.py            # about 30 minutes; --readme updates the README's W tables
    python bench/all.py --quick    # run.py --quick, S1 of 1,000,000 rows and S3 of 0.5 GB

Each part runs in its own interpreter and writes its own results (bench/results/); the exit
code is the first non-zero one of the parts. Options of one part alone: run it alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

HERE = Path(__file__).resolve().parent


def parts(quick: bool, readme: bool) -> List[List[str]]:
    run = ["run.py"] + (["--quick"] if quick else []) + (["--readme"] if readme else [])
    small = ["--rows", "1000000"] if quick else []
    return [run, ["scale.py"] + small + (["--gb", "0.5"] if quick else []), ["scale2.py"] + small]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the smaller, faster variant of each part")
    ap.add_argument("--readme", action="store_true", help="run.py puts its tables in the README")
    args = ap.parse_args(argv)
    codes = []
    for part in parts(args.quick, args.readme):
        t0 = time.monotonic()
        print(f"bench/all.py: {' '.join(part)}", flush=True)
        codes.append(subprocess.call([sys.executable, str(HERE / part[0]), *part[1:]]))
        print(f"bench/all.py: {part[0]} exit {codes[-1]} after {time.monotonic() - t0:.0f} s", flush=True)
    return next((c for c in codes if c), 0)


if __name__ == "__main__":
    sys.exit(main())
