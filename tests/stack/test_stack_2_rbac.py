"""RBAC matrix of the FAB auth manager with the users and roles of airflow/rbac.yaml, on the native
test stack (the checks are testkit/rbac_matrix.py, shared with the compose test)."""

from __future__ import annotations

from testkit.rbac_matrix import (  # noqa: F401 (collected here)
    test_anonymous_and_wrong_password_get_401,
    test_viewer_reads_but_cannot_trigger_pause_or_clear,
    test_ml_engineer_sees_only_its_two_dags,
    test_pause_rights_per_role,
    test_only_admin_manages_users,
)
