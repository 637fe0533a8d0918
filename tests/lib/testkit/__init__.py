"""The test tooling of the project, owned by the tests and the benchmarks (never part of the
product: stack/ and src/ import nothing from here). One package, one way to load it: pytest puts
tests/lib on sys.path (pyproject.toml `pythonpath`), the benchmarks through benchmarks/benchstack.py.

- ``stack_session``: the native test stack shared by tests/stack and tests/faults (a pytest plugin);
- ``faultsuite``, ``faults``, ``secondhost``: the fault suite's stack, fault injection, a second host;
- ``load``: bursts of runs (benchmarks/load.py and the load test);
- ``alert_clock``: the test stacks' compressed alert clock (``MLOPS_TEST_FAST_ALERTS``);
- ``dag_harness``: the throw-away Airflow home and ``dag.test()`` helpers of tests/dags;
- ``world``, ``corpus``: the data and model tests' world of real weeks, the mutated batches;
- ``pushgateway``, ``statsd_double``, ``statsd_mapping``, ``airflow_names``, ``promql``, ``grafana``:
  the observability checks' real Pushgateway, the statsd-exporter double and its mapper model,
  Airflow's StatsD names, PromQL and dashboard helpers;
- ``rbac_matrix``: the RBAC checks the native and the compose stacks both run;
- ``compose_stack``: the compose test's stack handle.
"""
