"""Which versions of which models are loaded, and handing them to requests.

TF Serving's `ServerCore` in small: a file-system poll finds the complete
versions under each model's base path, the version policy picks the ones to
serve, new ones are loaded (warmup included) while the old ones keep
serving, and versions that left the policy are unloaded only once a wanted
version is AVAILABLE and their in-flight requests have finished. That is
what makes a hot swap lose no request, and keeps the previous version
serving when a new one fails to load.

Version states and error messages follow `get_model_status_impl.cc` and
`basic_manager.cc`/`server_core.cc` (`Servable not found for request: ...`,
`Unrecognized servable version label: ...`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis.get_model_status_pb2 import ModelVersionStatus

from serving.batch_scheduler import BatchStats
from serving.servable import Servable
from serving.server_config import aspired_versions
from serving.serving_error import ServingError

log = logging.getLogger(__name__)

_START, _LOADING, _AVAILABLE, _UNLOADING, _END = (
    ModelVersionStatus.START, ModelVersionStatus.LOADING, ModelVersionStatus.AVAILABLE,
    ModelVersionStatus.UNLOADING, ModelVersionStatus.END)
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")

Loader = Callable[[str, int, str], Servable]


def list_versions(base_path: str) -> dict[int, str]:
    """The complete versions under a model's base path.

    A version is a directory named by a non-negative integer that holds
    saved_model.pb (or .pbtxt); anything else (temp dirs, a half-written
    export without saved_model.pb) is ignored.

    Returns:
      `{version: directory}`; empty when `base_path` does not exist.
    """
    if not tf.io.gfile.isdir(base_path):
        return {}
    versions = {}
    for entry in tf.io.gfile.listdir(base_path):
        name = entry.rstrip("/")
        if not name.isdigit():
            continue
        path = f"{base_path.rstrip('/')}/{name}"
        if any(tf.io.gfile.exists(f"{path}/{f}") for f in SAVED_MODEL_FILES):
            versions[int(name)] = path
    return versions


def _fingerprint(path: str) -> tuple:
    """Changes when a version directory is replaced (so a failed load is retried)."""
    for name in SAVED_MODEL_FILES:
        try:
            stat = tf.io.gfile.stat(f"{path}/{name}")
            return name, stat.mtime_nsec, stat.length
        except tf.errors.NotFoundError:
            continue
    return ()


@dataclasses.dataclass
class _Version:
    version: int
    path: str
    fingerprint: tuple
    state: int = _START
    error: ServingError | None = None
    servable: Servable | None = None
    refs: int = 0


@dataclasses.dataclass
class _Model:
    config: object  # tensorflow.serving.ModelConfig
    versions: dict[int, _Version] = dataclasses.field(default_factory=dict)
    warned_empty: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    def available(self) -> list[int]:
        return sorted(v for v, rec in self.versions.items() if rec.state == _AVAILABLE)


def _request_string(name: str, version: int | None) -> str:
    return f"Latest({name})" if version is None else f"Specific({name}, {version})"


class ModelManager:
    """Loads, serves and unloads the versions of the configured models.

    Args:
      model_configs: `tensorflow.serving.ModelConfig`s (absolute base paths).
      loader: `loader(name, version, path) -> Servable`; raises ServingError
        (or anything) when the version cannot serve.
    """

    def __init__(self, model_configs: Sequence, loader: Loader):
        self._models = {config.name: _Model(config) for config in model_configs}
        self._loader = loader
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._poll_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._retired_stats = BatchStats()  # counters of unloaded versions, so totals never go down

    @property
    def model_names(self) -> list[str]:
        return sorted(self._models)

    # -- polling ----------------------------------------------------------

    def poll(self) -> None:
        """One pass over every model: load new aspired versions, unload leavers."""
        with self._poll_lock:
            for model in self._models.values():
                if self._stop.is_set():
                    return
                self._poll_model(model)

    def start_polling(self, interval_seconds: float) -> None:
        """Polls every `interval_seconds` on a daemon thread (<= 0: never)."""
        if interval_seconds <= 0 or self._thread is not None:
            return

        def loop():
            while not self._stop.wait(interval_seconds):
                try:
                    self.poll()
                except Exception:  # noqa: BLE001  (a bad poll must not end polling)
                    log.exception("model version poll failed")

        self._thread = threading.Thread(target=loop, name="model-version-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling and unloads every version (after its in-flight requests)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._poll_lock:
            for model in self._models.values():
                with self._cond:
                    leaving = [rec for rec in model.versions.values() if rec.state == _AVAILABLE]
                    for rec in leaving:
                        rec.state = _UNLOADING
                for rec in leaving:
                    self._unload(model, rec)

    def _poll_model(self, model: _Model) -> None:
        on_disk = list_versions(model.config.base_path)
        if not on_disk and not model.warned_empty:
            log.warning("No versions of servable %s found under base path %s", model.name,
                        model.config.base_path)
        model.warned_empty = not on_disk
        aspired = aspired_versions(model.config.model_version_policy, on_disk)
        for version in sorted(aspired, reverse=True):
            fingerprint = _fingerprint(on_disk[version])
            if self._needs_load(model.versions.get(version), fingerprint):
                self._load(model, version, on_disk[version], fingerprint)
        self._unload_unaspired(model, aspired)

    @staticmethod
    def _needs_load(rec: _Version | None, fingerprint: tuple) -> bool:
        """New, unloaded earlier, or failed and since replaced on disk."""
        if rec is None:
            return True
        return rec.state == _END and (rec.error is None or rec.fingerprint != fingerprint)

    def _load(self, model: _Model, version: int, path: str, fingerprint: tuple) -> None:
        rec = _Version(version, path, fingerprint, state=_LOADING)
        with self._cond:
            model.versions[version] = rec
        log.info("Loading servable version {name: %s version: %d} from %s", model.name, version, path)
        start = time.monotonic()
        try:
            servable = self._loader(model.name, version, path)
        except Exception as err:  # noqa: BLE001  (recorded as the version's status)
            error = err if isinstance(err, ServingError) else ServingError(
                grpc.StatusCode.UNKNOWN, f"model {model.name!r} version {version} failed to load: {err}")
            log.error("Loading servable version {name: %s version: %d} failed: %s", model.name, version,
                      error)
            with self._cond:
                rec.state, rec.error = _END, error
                self._cond.notify_all()
            return
        with self._cond:
            rec.servable, rec.state = servable, _AVAILABLE
            self._cond.notify_all()
        log.info("Successfully loaded servable version {name: %s version: %d} in %.2fs", model.name, version,
                 time.monotonic() - start)

    def _unload_unaspired(self, model: _Model, aspired: set[int]) -> None:
        """Unloads AVAILABLE versions outside `aspired`, once an aspired one is AVAILABLE."""
        with self._cond:
            if not any(v in aspired for v in model.available()):
                return
            leaving = [rec for v, rec in model.versions.items()
                       if v not in aspired and rec.state == _AVAILABLE]
            for rec in leaving:
                rec.state = _UNLOADING  # no new request gets it from here on
        for rec in leaving:
            self._unload(model, rec)

    def _unload(self, model: _Model, rec: _Version) -> None:
        with self._cond:
            self._cond.wait_for(lambda: rec.refs == 0)
            servable, rec.servable = rec.servable, None
        try:
            servable.close()
        except Exception:  # noqa: BLE001
            log.exception("closing servable version {name: %s version: %d} failed", model.name, rec.version)
        with self._cond:
            self._retired_stats = self._retired_stats.add(servable.batch_stats())
            rec.state = _END
            self._cond.notify_all()
        log.info("Unloaded servable version {name: %s version: %d}", model.name, rec.version)

    # -- serving ----------------------------------------------------------

    @contextlib.contextmanager
    def servable(self, model_spec) -> Iterator[Servable]:
        """The version a request's `ModelSpec` selects, held for the `with` block.

        The latest AVAILABLE version unless `version` or `version_label` is
        set. The version is not unloaded before the block ends.

        Raises:
          ServingError: NOT_FOUND unknown model or version not AVAILABLE;
            INVALID_ARGUMENT unknown version label (as TF Serving).
        """
        rec = self._acquire(model_spec)
        try:
            yield rec.servable
        finally:
            with self._cond:
                rec.refs -= 1
                if rec.refs == 0:
                    self._cond.notify_all()

    def _acquire(self, model_spec) -> _Version:
        name, version = model_spec.name, self._requested_version(model_spec)
        with self._cond:
            model = self._models.get(name)
            if model is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: {_request_string(name, version)}; "
                                   f"this server serves models {self.model_names}")
            available = model.available()
            chosen = version if version is not None else (available[-1] if available else None)
            if chosen not in available:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: {_request_string(name, version)}; "
                                   f"available versions of {name!r}: {available}")
            rec = model.versions[chosen]
            rec.refs += 1
            return rec

    def _requested_version(self, model_spec) -> int | None:
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            return model_spec.version.value
        if choice != "version_label":
            return None
        label = model_spec.version_label
        model = self._models.get(model_spec.name)
        labels = dict(model.config.version_labels) if model is not None else {}
        if label not in labels:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Unrecognized servable version label: {label} (model {model_spec.name!r} has "
                               f"labels {sorted(labels)})")
        return labels[label]

    # -- status -----------------------------------------------------------

    def version_status(self, model_spec):
        """`GetModelStatusResponse` for a model (one version if `version` is set).

        Raises:
          ServingError: NOT_FOUND, with TF Serving's messages.
        """
        name = model_spec.name
        with self._cond:
            model = self._models.get(name)
            versions = dict(model.versions) if model is not None else {}
            if model_spec.HasField("version"):
                wanted = model_spec.version.value
                if wanted not in versions:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Could not find version {wanted} of model {name}")
                versions = {wanted: versions[wanted]}
            elif not versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
            response = get_model_status_pb2.GetModelStatusResponse()
            for version in sorted(versions):
                rec = versions[version]
                status = response.model_version_status.add(version=version, state=rec.state)
                if rec.error is not None:
                    status.status.error_code = rec.error.code_number
                    status.status.error_message = rec.error.message
        return response

    def available_versions(self, name: str) -> list[int]:
        with self._cond:
            return self._models[name].available()

    def wait_until_available(self, names: Sequence[str] | None = None, timeout: float | None = None) -> None:
        """Blocks until each model has an AVAILABLE version.

        Raises:
          ValueError: a name that is not configured.
          TimeoutError: after `timeout` seconds, naming each model's version states and errors.
        """
        names = list(names) if names is not None else self.model_names
        unknown = sorted(set(names) - set(self._models))
        if unknown:
            raise ValueError(f"models {unknown} are not configured; configured: {self.model_names}")
        with self._cond:
            ready = self._cond.wait_for(lambda: all(self._models[n].available() for n in names), timeout)
            if not ready:
                raise TimeoutError(f"models not AVAILABLE after {timeout}s: " + "; ".join(
                    self._describe(self._models[n]) for n in names if not self._models[n].available()))

    @staticmethod
    def _describe(model: _Model) -> str:
        if not model.versions:
            return f"{model.name}: no versions under {model.config.base_path}"
        return f"{model.name}: " + ", ".join(
            f"version {v} {ModelVersionStatus.State.Name(rec.state)}"
            + (f" ({rec.error})" if rec.error else "")
            for v, rec in sorted(model.versions.items()))

    def batch_stats(self) -> BatchStats:
        """Batching counters summed over every version ever loaded."""
        with self._cond:
            retired = self._retired_stats
            servables = [rec.servable for model in self._models.values() for rec in model.versions.values()
                         if rec.servable is not None]
        total = retired
        for servable in servables:
            total = total.add(servable.batch_stats())
        return total
