"""The RBAC matrix of airflow/rbac.yaml on the containers: the same checks as the native stack's
tests/stack/test_stack_2_rbac.py (testkit/rbac_matrix.py), run against the compose api-server (its
`dags_ready` fixture is this folder's)."""

from __future__ import annotations

from testkit.rbac_matrix import (  # noqa: F401 (collected here)
    test_anonymous_and_wrong_password_get_401,
    test_viewer_reads_but_cannot_trigger_pause_or_clear,
    test_ml_engineer_sees_only_its_two_dags,
    test_pause_rights_per_role,
    test_only_admin_manages_users,
)
