"""archspec: compile declarative CNN specs into PyTorch and Keras source.

`archspec.compile` and `archspec.create_model` (archspec.api) load on first
use, so `import archspec` stays light: no pydantic, torch or Keras.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "compile", "create_model"]


def __getattr__(name: str):
    if name in ("compile", "create_model"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'archspec' has no attribute {name!r}")
