"""tltrain: high-throughput transfer-learning trainer for image classification on TensorFlow.

The Python API (tltrain/api.py): `tltrain.fit`, `tltrain.evaluate`, `tltrain.export`, `tltrain.predict` and
`tltrain.log_to_console`. It is loaded on first use, so importing a submodule alone (the converter's worker
processes import tltrain.convert) does not import TensorFlow. `evaluate`, `export` and `predict` are also
the modules of those modes; calling one calls its API function.
"""

# First, before any module imports TensorFlow: its environment defaults and a start-up free of C++ log noise.
from tltrain import tf_startup

tf_startup.install()

import importlib  # noqa: E402
import types  # noqa: E402

__version__ = "0.1.0"
__all__ = ["fit", "evaluate", "export", "predict", "log_to_console"]


class ApiModule(types.ModuleType):
    """A module of tltrain whose name is also an API function: calling the module calls tltrain.api's."""

    def __call__(self, *args, **kwargs):
        from tltrain import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def __getattr__(name: str):
    if name in ("evaluate", "export", "predict"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in __all__:
        from tltrain import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
