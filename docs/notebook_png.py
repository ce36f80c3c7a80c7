"""Make docs/notebook.png: the notebook flow, run in a real Jupyter kernel, as a browser shows it.

    python docs/notebook_png.py [--out docs/notebook.png] [--keep DIR]

Starts a private Slurm cluster (tests/testbed.py; without Slurm the job runs on the local
backend), runs the README's notebook cells with nbclient, converts the executed notebook to
HTML with nbconvert and photographs it with headless Chromium. The widget renderer and
require.js come from the npm registry (``npm pack``) and are loaded from local files, so the
page needs no network. Needs `pip install ".[docs]"`, npm and Debian's chromium.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Dict

REPO = Path(__file__).resolve().parent.parent
# The cells of the README's "In a notebook" section.
CELLS = [
    "import pandas as pd\nfrom slurm_apply import slurm_apply\n\n"
    "def fit(depth, rate):\n    import time\n    time.sleep(0.5)\n"
    "    if depth * rate > 2:\n        raise ValueError(f'diverged: depth={depth}, rate={rate}')\n"
    "    return {'score': round(1 - 0.1 / (depth * rate), 3)}\n\n"
    "grid = pd.DataFrame([(d, r) for d in (2, 3, 4, 6, 8, 12) for r in (0.01, 0.03, 0.1, 0.2, 0.3)],\n"
    "                    columns=['depth', 'rate'])\n"
    "job = slurm_apply(fit, grid, nodes=3, cpus_per_node=2, jobname='fit')\njob",
    "status = job.wait()\nstatus",
    "job.get_output(errors='keep').tail(4)",
]
WIDTH_PX, HEIGHT_PX = 1000, 1040


def npm_files(into: Path) -> Dict[str, str]:
    """embed-amd.js (the HTML widget manager) and require.js, unpacked from npm packages."""
    found: Dict[str, str] = {}
    for spec, member, name in [("@jupyter-widgets/html-manager@1", "package/dist/embed-amd.js", "embed-amd.js"),
                               ("requirejs@2", "package/require.js", "require.js")]:
        tgz = subprocess.run(["npm", "pack", "--silent", spec], cwd=into, check=True, text=True,
                             capture_output=True).stdout.strip().splitlines()[-1]
        with tarfile.open(into / tgz) as tar:
            (into / name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
        found[name] = name
    return found


def run_cells(workdir: Path, env: Dict[str, str]):
    import nbclient
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(workdir)}}).execute(env=env)
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "notebook.png")
    parser.add_argument("--keep", type=Path, help="also write the executed notebook and its HTML here")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    import testbed
    from nbconvert import HTMLExporter

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nbpng-")))
        os.chmod(tmp, 0o755)  # the cluster's daemons run the tasks there
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        if not testbed.slurm_packages_missing():
            cluster = stack.enter_context(testbed.SlurmCluster(tmp / "slurm", nodes=3, name="demo"))
            env.update(cluster.env())
        work = tmp / "work"
        work.mkdir(mode=0o755)
        nb = run_cells(work, env)
        page = tmp / "page"
        page.mkdir()
        js = npm_files(page)
        html, _ = HTMLExporter(widget_renderer_url=js["embed-amd.js"],
                               require_js_url=js["require.js"]).from_notebook_node(nb)
        (page / "notebook.html").write_text(html)
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--no-first-run",
                        f"--user-data-dir={tmp / 'profile'}", "--allow-file-access-from-files",
                        "--hide-scrollbars", f"--window-size={WIDTH_PX},{HEIGHT_PX}",
                        "--virtual-time-budget=10000", f"--screenshot={args.out.absolute()}",
                        (page / "notebook.html").as_uri()],
                       check=True, capture_output=True, timeout=300)
        if args.keep:
            import nbformat

            args.keep.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.keep / "notebook.ipynb")
            (args.keep / "notebook.html").write_text(html)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
