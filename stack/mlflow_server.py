"""`mlflow server` as one process: `python -m stack.mlflow_server <mlflow server arguments>`.

MLflow's CLI prepares the server (checks its options, migrates the stores, bootstraps basic-auth)
and then starts uvicorn as a child, staying resident beside it only to forward signals: a second
interpreter holding all of MLflow, about 0.2 GiB of PSS on an idle stack. Here MLflow's own code
still computes the environment and the uvicorn command line; only its last step, starting that
command, becomes an exec, so supervisord runs (and signals) the server itself.

MLflow's job runner (for server-side jobs such as scorers, which this project never submits) is
started by that same launcher after the server; it stays off: MLFLOW_SERVER_ENABLE_JOB_EXECUTION.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def exec_in_place(cmd: list[Any], *, extra_env: dict[str, str] | None = None, **_: Any) -> None:
    """Replace this process with `cmd`, with this environment plus `extra_env`."""
    argv = [str(part) for part in cmd]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, {**os.environ, **(extra_env or {})})


def main(argv: list[str]) -> None:
    """Run `mlflow server` with `argv`, exec'ing its server command."""
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    import mlflow.server
    from mlflow.cli import cli

    # _run_server looks `_exec_cmd` up in its module's globals when it starts the server.
    mlflow.server._exec_cmd = exec_in_place
    cli.main(args=["server", *argv], prog_name="mlflow")


if __name__ == "__main__":
    main(sys.argv[1:])
