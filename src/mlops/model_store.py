"""The one way a registered model is loaded: safe format only, verified before loading.

``mlflow.sklearn.load_model`` takes the serialization format and the skops trusted types from the
version's own ``MLmodel`` and accepts pickle: whoever can write a version's files (every task holds
the pipeline login) would choose what runs in the loading process. Here instead:

- the ``MLmodel`` file is parsed as data (YAML) and refused unless its ``sklearn`` flavor is in the
  ``skops`` format with the model file MLflow writes (``model.skops``); a ``python_function``
  flavor must name ``mlflow.sklearn``; a list of trusted types in it that goes beyond the
  project's own is refused (it is never used either way);
- the model file's sha256 must equal the version tag ``model_sha256``, recorded at registration by
  the registering account (:func:`artifact_digest`, called by :func:`mlops.registry.register`);
- only then is it loaded with ``skops.io.load(file, trusted=SKOPS_TRUSTED_TYPES)`` (this module's
  list, the types the project's pipeline needs), and the result must be a scikit-learn Pipeline.

Every refusal is a :class:`~mlops.errors.ModelIntegrityError` naming the version and the file.
Evaluation and drift (:func:`mlops.evaluate.load_version`) and the prediction service load through
:func:`load_version`.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import config
from mlops.errors import ModelIntegrityError, RegistryError
from mlops.util import sha256_file

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

#: The types beyond skops' defaults that the project's pipeline needs to load back (and no more).
SKOPS_TRUSTED_TYPES = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]
#: Version tag holding the sha256 of the model file, written when the version is registered.
DIGEST_TAG = "model_sha256"
#: The file name MLflow gives a skops-serialized sklearn model (and the only one accepted).
MODEL_FILE = "model.skops"

# Registered versions never change and every load is verified: a verified model is kept per
# process by (store, model, version, digest); a different digest tag loads again.
_MODELS: "OrderedDict[tuple[str, str, str, str], Any]" = OrderedDict()
_MODELS_KEPT = 8


def check_model_dir(local: Path, version: str | int) -> Path:
    """The model file of a downloaded model folder after checking its ``MLmodel`` (see module
    doc); a ModelIntegrityError naming the version and the file otherwise."""
    import yaml

    mlmodel = local / "MLmodel"
    try:
        doc = yaml.safe_load(mlmodel.read_text())
    except FileNotFoundError:
        raise ModelIntegrityError(version, mlmodel, "no MLmodel file in the artifact") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelIntegrityError(version, mlmodel, f"not valid YAML ({exc})") from None
    flavors = doc.get("flavors") if isinstance(doc, dict) else None
    if not isinstance(flavors, dict) or not isinstance(flavors.get("sklearn"), dict):
        raise ModelIntegrityError(version, mlmodel, "no sklearn flavor (only sklearn models in skops format load)")
    sk = flavors["sklearn"]
    fmt = sk.get("serialization_format")
    if fmt != "skops":
        raise ModelIntegrityError(version, mlmodel, f"serialization_format is {fmt!r}, only 'skops' is accepted "
                                                    "(pickle and cloudpickle run code when loaded)")
    if sk.get("pickled_model") != MODEL_FILE:
        raise ModelIntegrityError(version, mlmodel, f"model file {sk.get('pickled_model')!r} is not {MODEL_FILE!r}")
    extra = sorted(set(sk.get("skops_trusted_types") or []) - set(SKOPS_TRUSTED_TYPES))
    if extra:
        raise ModelIntegrityError(version, mlmodel, f"asks to trust types the project does not: {extra}")
    pyfunc = flavors.get("python_function")
    if pyfunc is not None and (not isinstance(pyfunc, dict) or pyfunc.get("loader_module") != "mlflow.sklearn"):
        raise ModelIntegrityError(version, mlmodel, "python_function flavor does not load with mlflow.sklearn")
    model_file = local / MODEL_FILE
    if not model_file.is_file() or model_file.is_symlink():
        raise ModelIntegrityError(version, model_file, "model file missing (or not a regular file)")
    return model_file


def _download(uri: str, dest: str, client: Any | None) -> Path:
    import mlflow

    where = {} if client is None else {"tracking_uri": client.tracking_uri, "registry_uri": client._registry_uri}
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dest, **where))


def artifact_digest(uri: str, version: str | int = "new", client: Any | None = None) -> str:
    """sha256 of the model file at ``uri`` (e.g. ``runs:/<run id>/model``), after the same format
    checks as loading: what registration records as tag :data:`DIGEST_TAG`."""
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        return sha256_file(check_model_dir(_download(uri, tmp, client), version))


def load_version(version: str | int, client: Any | None = None) -> "Pipeline":
    """The verified sklearn pipeline of registered ``version`` (see module doc).

    ``client``: an ``MlflowClient`` (the prediction service passes its read-only one); default the
    package's tracking set-up. A version that does not exist is a RegistryError; MLflow errors
    (server down) propagate; a refused artifact is a ModelIntegrityError.
    """
    from mlflow.exceptions import MlflowException
    from sklearn.pipeline import Pipeline

    if client is None:
        from mlops import tracking

        client = tracking.setup()
    name, version = config.model_name(), str(version)
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:  # only "does not exist" means absent (mlops.registry.is_not_found)
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"model {name} has no version {version}") from exc
        raise
    expected = (mv.tags or {}).get(DIGEST_TAG)
    if not expected:
        raise ModelIntegrityError(version, f"models:/{name}/{version}",
                                  f"no {DIGEST_TAG} tag: no digest was recorded when it was registered")
    key = (client.tracking_uri, name, version, expected)
    if key in _MODELS:
        _MODELS.move_to_end(key)
        return _MODELS[key]
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        model_file = check_model_dir(_download(f"models:/{name}/{version}", tmp, client), version)
        where = f"models:/{name}/{version}/{MODEL_FILE}"
        actual = sha256_file(model_file)
        if actual != expected:
            raise ModelIntegrityError(version, where, f"sha256 {actual} differs from the {DIGEST_TAG} tag "
                                                      f"{expected} recorded at registration")
        model = _skops_load(model_file, version, where)
    if not isinstance(model, Pipeline):
        raise ModelIntegrityError(version, where, f"holds a {type(model).__name__}, not a scikit-learn Pipeline")
    _MODELS[key] = model
    while len(_MODELS) > _MODELS_KEPT:
        _MODELS.popitem(last=False)
    return model


def _skops_load(model_file: Path, version: str, where: str) -> Any:
    import skops.io
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        return skops.io.load(model_file, trusted=SKOPS_TRUSTED_TYPES)
    except UntrustedTypesFoundException as exc:
        raise ModelIntegrityError(version, where, f"holds types the project does not trust: {exc}") from None
    except Exception as exc:  # a corrupt zip, a malformed schema: refused the same way
        raise ModelIntegrityError(version, where, f"not a loadable skops file ({type(exc).__name__}: {exc})") from None
