"""The RBAC matrix of airflow/rbac.yaml on the containers: the same checks as the native stack's
tests/stack/test_stack_2_rbac.py, run against the compose api-server (its `dags_ready` fixture is
this folder's)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_NATIVE = Path(__file__).resolve().parents[1] / "stack" / "test_stack_2_rbac.py"
_spec = importlib.util.spec_from_file_location("native_rbac_matrix", _NATIVE)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

# Every test of the native matrix, collected here with the compose stack as `dags_ready`.
globals().update({name: obj for name, obj in vars(_module).items() if name.startswith("test_")})
