"""The model in service: follows alias ``champion``, loads safely, warms, swaps atomically.

A background thread asks MLflow for the alias every ``SERVING_POLL_S`` seconds. When it names a
version other than the one served, the version is loaded through :mod:`mlops.model_store` (skops
with the project's trusted types, digest verified), warmed on its logged input example, and only
then published: the holder's ``current`` is replaced by one assignment of an immutable
:class:`Served`. A request takes ``current`` once and scores with it, so requests in flight finish
on the model they started with and none fails during a swap.

Fail closed, keep serving:
- MLflow down (or the alias unreadable): the current model stays; the seconds since the last
  successful check grow (``/health`` and ``mlops_serving_registry_check_age_seconds``).
- A new version that fails to load, verify or warm: the old one stays, the reason is logged and
  shown in ``/health``, ``mlops_serving_model_load_failures_total`` counts it once; the version is
  not tried again until the alias moves elsewhere and back. A load cut short by an MLflow outage is
  not a refusal: it is retried at the next poll.
- No champion at all: nothing is served (``/health`` 503) until one is deployed; a champion that
  disappears leaves the last one serving (an alias is never deleted by the pipeline).
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import config
from mlops.config import Schema
from mlops.errors import MlopsError
from mlops_serving import metrics
from mlops_serving.rows import model_categories

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("mlops_serving.holder")


@dataclass(frozen=True)
class Served:
    """One loaded, verified and warmed version (never changed once published)."""

    version: str
    model: Any
    categories: dict[str, frozenset[str]]
    loaded_at: float
    load_s: float
    #: what scores: ``model`` compiled (:mod:`mlops_serving.compiled`), or ``model`` itself
    scorer: Any = None

    def __post_init__(self) -> None:
        if self.scorer is None:
            object.__setattr__(self, "scorer", self.model)


@dataclass
class Holder:
    """The served model and what the service knows about the registry."""

    schema: Schema
    poll_s: float
    client: Any = None
    current: Served | None = None
    last_check_ok: float | None = None
    last_check_error: str | None = None
    refused: dict[str, str] = field(default_factory=dict)
    swaps: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = field(default_factory=time.time)

    def check_age(self) -> float:
        """Seconds since the last successful alias check (since start when none succeeded)."""
        return time.time() - (self.last_check_ok or self._started)

    def _client(self) -> Any:
        if self.client is None:
            import mlflow
            from mlflow.tracking import MlflowClient

            uri = config.tracking_uri()
            # models:/ URIs are resolved against the process-wide registry URI.
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self.client

    def check_once(self) -> None:
        """One poll: read the alias, load and swap when it moved (see module doc)."""
        from mlops.registry import CHAMPION, aliases

        try:
            version = aliases(self._client()).get(CHAMPION)
        except Exception as exc:  # an outage is never an answer: keep serving, report the age
            first = self.last_check_error is None
            self.last_check_error = f"{type(exc).__name__}: {str(exc)[:300]}"
            (log.warning if first else log.debug)("alias check failed, still serving v%s: %s",
                                                  self.current.version if self.current else None,
                                                  self.last_check_error)
            return
        if self.last_check_error:
            log.info("alias check answers again (after %.0f s)", self.check_age())
        self.last_check_ok = time.time()
        self.last_check_error = None
        served = self.current.version if self.current else None
        if version is not None and version != served and version not in self.refused:
            self._load(version)
        # Exported after the load attempt, so a swap in progress never shows as a stale model.
        metrics.REGISTRY_CHAMPION.set(float(version or 0))

    def _load(self, version: str) -> None:
        from mlops import model_store
        from mlops.modeling import model_input
        from mlops_serving.compiled import compile_pipeline

        started = time.perf_counter()
        try:
            model = model_store.load_version(version, self._client())
            example = self._input_example(version)
            categories = model_categories(model, self.schema)
            _warm(model, example)
            scorer = compile_pipeline(model, model_input(example, self.schema)) or model
        except (MlopsError, WarmError) as exc:
            self._refuse(version, str(exc))
            return
        except Exception as exc:
            if _is_outage(exc):
                self.last_check_error = f"loading v{version}: {type(exc).__name__}: {str(exc)[:300]}"
                log.warning("could not load v%s (MLflow unreachable), retrying: %s", version, exc)
                return
            self._refuse(version, f"{type(exc).__name__}: {exc}")
            return
        old = self.current
        self.current = Served(version, model, categories, time.time(), round(time.perf_counter() - started, 3),
                              scorer)
        self.swaps += 1
        metrics.MODEL_VERSION.set(float(version))
        log.info("serving v%s (was v%s; loaded and warmed in %.2f s; %s)", version,
                 old.version if old else None, self.current.load_s,
                 "compiled" if scorer is not model else "scored by the pipeline itself")

    def _refuse(self, version: str, reason: str) -> None:
        self.refused[version] = reason
        metrics.LOAD_FAILURES.inc()
        log.error("refused v%s, still serving v%s: %s", version,
                  self.current.version if self.current else None, reason)

    def _input_example(self, version: str) -> "pd.DataFrame":
        """The version's logged input example (model input columns), parsed as data."""
        import mlflow
        import pandas as pd

        with tempfile.TemporaryDirectory(prefix="mlops-example-") as tmp:
            client = self._client()
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{config.model_name()}/{version}/input_example.json", dst_path=tmp,
                    tracking_uri=client.tracking_uri, registry_uri=client._registry_uri)
            except Exception as exc:
                if _is_outage(exc):
                    raise
                raise WarmError(f"v{version}: no logged input example to warm on ({exc})") from None
            try:
                doc = json.loads(Path(local).read_text())
                return pd.DataFrame(doc["data"], columns=doc["columns"])
            except (ValueError, KeyError, TypeError) as exc:
                raise WarmError(f"v{version}: input_example.json is not a pandas split frame ({exc})") from None

    def start(self) -> None:
        """Check once now (so a ready service answers at once), then poll in the background."""
        self.check_once()
        metrics.CHECK_AGE.set_function(self.check_age)
        self._thread = threading.Thread(target=self._run, name="champion-poll", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_once()
            except Exception:  # never let the poller die
                log.exception("alias poll failed")

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.poll_s + 5)


class WarmError(Exception):
    """A version could not be warmed (no example, or its predictions are not probabilities)."""


def _warm(model: Any, example: "pd.DataFrame") -> None:
    """Score the example; WarmError unless every answer is a probability."""
    import numpy as np

    from mlops.modeling import model_input

    try:
        proba = model.predict_proba(model_input(example))[:, 1]
    except Exception as exc:
        raise WarmError(f"warm-up on the logged input example failed: {type(exc).__name__}: {exc}") from None
    if len(proba) != len(example) or not np.all((proba >= 0) & (proba <= 1)):
        raise WarmError(f"warm-up answered {proba!r}, not one probability per example row")


def _is_outage(exc: BaseException) -> bool:
    """An error that means MLflow (or the network) is unavailable, not that the version is bad."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError, OSError)):
        return True
    if isinstance(exc, MlflowException):
        text = str(exc)
        return exc.error_code in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED") or \
            "Max retries exceeded" in text or "Connection refused" in text
    return False
