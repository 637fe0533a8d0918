"""
### stack_cli_probe: one short task for the CLI and client tests (test-only DAG, bundle `stack-probe`)

Loaded only by the test stack of `tests/stack`. `echo` logs `CLI-PROBE <word>` (the run conf's
`word`) and returns `{"word": <word>}` as its XCom, so a test that triggers it knows what the run's
task log and XCom must hold. It reads no data and touches nothing of the product DAGs.
The tests: `tests/stack/test_stack_7_cli.py`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import dag, get_current_context, task

from mlops_airflow.config import default_args

DAG_ID = "stack_cli_probe"


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args=default_args(),
    tags=["test"],
    doc_md=__doc__,
)
def stack_cli_probe() -> None:
    """One task that echoes the run conf's word into its log and its XCom."""

    @task
    def echo() -> dict:
        """Log the word and return it."""
        import logging

        word = str(get_current_context()["dag_run"].conf.get("word", ""))
        logging.getLogger("airflow.task").info("CLI-PROBE %s", word)
        return {"word": word}

    echo()


stack_cli_probe()
