"""Optional dependencies: imported where used, with an install hint when missing.

Why: the core install (what `mer prepare` workers and the training job need)
leaves out the serving stage's dependencies — ScaNN, the gRPC health service
and the Prometheus client — which `pip install 'mer[serving]'` adds. Every
module that needs one imports it through `require`, inside the function that
uses it, so nothing else breaks without them and the error says what to do.
"""

from __future__ import annotations

import importlib
import types

# Module -> (pip extra, what needs it); setup.py's `serving` extra installs these.
SERVING = {
    "scann": "the ScaNN index (mer build-index, mer serve)",
    "grpc_health": "the retrieval service's gRPC health service (mer serve)",
    "prometheus_client": "the retrieval service's Prometheus metrics (mer serve)",
}


def install_hint(module: str) -> str:
    """`pip install ...` for an optional module."""
    return "pip install 'mer[serving]'" if module.split(".")[0] in SERVING else f"pip install {module}"


def require(module: str) -> types.ModuleType:
    """Imports `module` (dotted), or says which extra provides it.

    Raises:
      ImportError: the module is not installed; the message names what needs
        it and the `pip install` command.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        what = SERVING.get(top, module)
        raise ImportError(f"{what} needs `{top}`, which is not installed ({err}): "
                          f"{install_hint(module)}") from err
