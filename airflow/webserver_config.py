"""Flask settings of the api-server's FAB app (`[fab] config_file`, set for the api-server only,
in both stacks): the key that signs the UI's session cookies is its own, AIRFLOW_UI_SECRET_KEY.

`[api] secret_key` would sign them otherwise; every task-log server holds that key (to verify the
api-server's log requests), and a worker host's log server runs beside its workers: its files must
not be enough to forge an Admin session (docs/security.md)."""

import os

SECRET_KEY = os.environ.get("AIRFLOW_UI_SECRET_KEY", "")
if not SECRET_KEY:
    raise RuntimeError("AIRFLOW_UI_SECRET_KEY is not set: the api-server's UI sessions need their own key "
                       "(airflow/webserver_config.py; run `make env` to generate it)")
