"""The node side's old name: job scripts written before it moved run
``python -m slurm_apply._worker``, which is ``python -m slurm_apply._node``."""

import sys

from ._node.__main__ import main, run_task  # noqa: F401
from ._node.rows import decode_chunk, row_seed  # noqa: F401

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
