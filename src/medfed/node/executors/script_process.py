"""The script runner: ``python -m medfed.node.executors.script_process SCRATCH``, sandboxed.

How it runs: the node's script executor (:mod:`medfed.node.executors.scripts`) writes an
approved script (``script.py``) and the entitled columns (``data.parquet``) into a fresh
scratch folder and starts this module inside the sandbox
(:func:`medfed.node.executors.sandbox.sandboxed_popen`), where the scratch folder is the
only writable path and there is no network. The runner installs
:mod:`medfed.algorithms.scripts.api` as the module ``medfed_script``, executes the script
as ``__main__`` and, when it returns, writes the declared outputs to ``outputs.json``.
The exit status tells the agent what happened: 0 the script ended, 3 it raised (the
traceback goes to stderr, which the agent keeps in the node's own log only). The agent
trusts nothing of this: it reads ``outputs.json`` with a size cap and checks every output.
"""

from __future__ import annotations

import runpy
import sys
import traceback
from pathlib import Path

from medfed.algorithms.scripts import api

__all__ = ["main"]

SCRIPT_FAILED = 3


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m medfed.node.executors.script_process SCRATCH", file=sys.stderr)
        return 2
    scratch = Path(args[0])
    api._bind(scratch)
    sys.modules["medfed_script"] = api
    try:
        runpy.run_path(str(scratch / "script.py"), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            print(f"the script exited with status {exc.code!r}", file=sys.stderr)
            return SCRIPT_FAILED
    except BaseException:
        traceback.print_exc()
        return SCRIPT_FAILED
    api._write(scratch / "outputs.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
