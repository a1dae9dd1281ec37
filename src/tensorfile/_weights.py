"""What counts as a model's weights, and the refusal of a model that has none.

An empty file, an empty folder, or a folder of configs without weights is
what an interrupted download or a wrong path looks like. ``scan``, ``sign``
and ``verify`` all refuse to call such a model safe, signed or verified
(issue 21, "empty is not safe"); they share these names and this rule.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tensorfile.errors import EmptyModelError

#: Suffixes of files that hold weights (pickle checkpoints, safetensors and
#: the other formats people publish). A file without one can still be
#: weights (a safetensors file called ``weights``): callers that know a
#: file's content say so too.
WEIGHTS_SUFFIXES = frozenset({
    ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".npy", ".npz", ".safetensors",
    ".h5", ".keras", ".gguf", ".onnx", ".msgpack", ".joblib", ".pb", ".tflite",
})


def is_weights_name(name: str) -> bool:
    """Whether a file name (or path) says it holds weights."""
    return os.path.splitext(name)[1].lower() in WEIGHTS_SUFFIXES


def refuse_empty(model: object, files: Iterable[tuple[str, int, bool]], *, single: bool,
                 doing: str) -> None:
    """Raise :class:`EmptyModelError` when there is no model to ``doing`` ("sign").

    ``files``: ``(name, size, is_weights)`` per file of the model, where
    ``is_weights`` is what the caller knows of its content (a parsed
    safetensors header); ``single``: ``model`` is one file, which is then
    the model whatever its name (refused only when it is 0 bytes).
    """
    listed = list(files)
    if single:
        if listed and listed[0][1] == 0:
            raise EmptyModelError(f"{model}: an empty file (0 bytes): nothing to {doing} "
                                  "(an interrupted download?)")
        return
    if not listed:
        raise EmptyModelError(f"{model}: an empty folder: nothing to {doing}")
    if not any(size != 0 and (known or is_weights_name(name)) for name, size, known in listed):
        raise EmptyModelError(
            f"{model}: no model files: {len(listed)} file(s), none with weights "
            f"(.safetensors, .bin, .pt, ... or a non-empty safetensors file): nothing to "
            f"{doing} (a partial download, or the wrong folder?)")
