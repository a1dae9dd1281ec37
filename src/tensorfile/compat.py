"""Make libraries that ``import safetensors`` read and write through tensorfile.

::

    import tensorfile.compat
    tensorfile.compat.install(verify="publisher.pub")   # before importing them
    import transformers
    model = transformers.AutoModel.from_pretrained("signed-model/")

:func:`install` puts an import hook first in ``sys.meta_path`` so that
``safetensors`` and ``safetensors.{numpy,torch,flax,tensorflow,paddle,mlx}``
import as tensorfile's modules of the same API (``tensorfile``,
``tensorfile.numpy``, ``tensorfile.torch``...). With ``verify``, every
function that loads (``safe_open``, ``load_file``, ``load``, ``load_model``)
checks what it reads against the model's signature unless its caller passes
``verify=`` itself: a tampered tensor raises
:class:`tensorfile.errors.VerificationError` instead of loading, and a file
without a signature raises :class:`tensorfile.errors.NotSignedError`.

``deserialize`` and ``serialize`` work on bytes and raw memory the caller
already holds, so they verify nothing; every function that opens or parses a
file or its bytes as tensors does.

Modules that imported the real ``safetensors`` before :func:`install` keep
what they imported, so call it first (``install`` drops any ``safetensors``
module already in ``sys.modules`` so that later imports get tensorfile).
:func:`uninstall` restores what was there.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import inspect
import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith

#: safetensors module name -> the tensorfile module with its API.
MODULES = {
    "safetensors": "tensorfile",
    "safetensors.numpy": "tensorfile.numpy",
    "safetensors.torch": "tensorfile.torch",
    "safetensors.flax": "tensorfile.flax",
    "safetensors.tensorflow": "tensorfile.tensorflow",
    "safetensors.paddle": "tensorfile.paddle",
    "safetensors.mlx": "tensorfile.mlx",
}

#: Names the safetensors modules have beyond tensorfile's ``__all__``: the top
#: level's ``_safe_open_handle``, and what ``safetensors.numpy`` and
#: ``safetensors.torch`` import from the top level (paddle imports
#: ``safe_open`` from ``safetensors.numpy``).
_EXTRA = ("_safe_open_handle", "safe_open", "TensorSpec", "serialize", "serialize_file",
          "deserialize")


def _with_default_verify(func: Any, verify: VerifyWith | None) -> Any:
    """``func`` with ``verify`` as the default of its ``verify=`` keyword."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("verify", verify)
        return func(*args, **kwargs)

    return wrapper


def _takes_verify(value: object) -> bool:
    if not inspect.isfunction(value):  # classes (SafeOpen) stay classes
        return False
    try:
        return "verify" in inspect.signature(value).parameters
    except (TypeError, ValueError):
        return False


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str, verify: VerifyWith | None) -> None:
        self._target = target
        self._verify = verify

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return types.ModuleType(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        source = importlib.import_module(self._target)
        names = set(getattr(source, "__all__", ())) | {
            n for n in vars(source) if n.startswith("_") and not n.startswith("__")
        }
        names.update(n for n in _EXTRA if n in vars(source) or self._target == "tensorfile")
        for name in sorted(names):
            try:
                value = getattr(source, name)
            except AttributeError:
                continue
            if self._verify is not None and _takes_verify(value):
                value = _with_default_verify(value, self._verify)
            setattr(module, name, value)
        # Private tables built on first use (tensorfile.torch's _SIZE, _TYPES).
        source_getattr = getattr(source, "__getattr__", None)
        if source_getattr is not None:
            module.__getattr__ = source_getattr  # type: ignore[method-assign]
        module.__doc__ = source.__doc__
        setattr(module, "__version__", "0.8.0")  # noqa: B010 - the safetensors API it provides


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, verify: VerifyWith | None) -> None:
        self.verify = verify

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        target_name = MODULES.get(fullname)
        if target_name is None:
            return None
        loader = _AliasLoader(target_name, self.verify)
        spec = importlib.machinery.ModuleSpec(
            fullname, loader, is_package=fullname == "safetensors"
        )
        if fullname == "safetensors":
            spec.submodule_search_locations = []
        return spec


_state: dict[str, Any] = {}


def _drop_safetensors_modules() -> dict[str, types.ModuleType]:
    dropped = {}
    for name in list(sys.modules):
        if name == "safetensors" or name.startswith("safetensors."):
            dropped[name] = sys.modules.pop(name)
    return dropped


def install(*, verify: VerifyWith | None = None) -> None:
    """Make ``import safetensors`` (and its submodules) import tensorfile.

    ``verify`` (a public key, root certificates or a
    :class:`tensorfile.integrity.TrustPolicy`, as :func:`tensorfile.safe_open`
    takes) becomes the default ``verify=`` of every loading function those
    modules have. Calling it again replaces the previous setting.
    """
    if "finder" in _state:
        uninstall()
    finder = _Finder(verify)
    _state["finder"] = finder
    _state["saved"] = _drop_safetensors_modules()
    sys.meta_path.insert(0, finder)


def uninstall() -> None:
    """Undo :func:`install`: ``import safetensors`` finds the real package again."""
    finder = _state.pop("finder", None)
    if finder is None:
        return
    if finder in sys.meta_path:
        sys.meta_path.remove(finder)
    _drop_safetensors_modules()
    sys.modules.update(_state.pop("saved", {}))


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return "finder" in _state


__all__ = ["install", "installed", "uninstall"]
