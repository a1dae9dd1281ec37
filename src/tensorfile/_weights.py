"""What counts as a model's weights, and the refusal of a model that has none.

An empty file, an empty folder, or a folder of configs without weights is
what an interrupted download or a wrong path looks like (issue 21, "empty
is not safe"). ``scan`` refuses to call a folder without weights safe (by
these names). ``sign`` and ``verify`` refuse only a model with no content at
all (no file, or only 0-byte files): a publisher may sign any files, and
model-signing's own signed test models are two small files named
``signme-1`` and ``signme-2``, which must verify.
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


def refuse_empty(model: object, sizes: Iterable[int], *, single: bool, doing: str) -> None:
    """Raise :class:`EmptyModelError` when there is nothing to ``doing`` ("sign").

    ``sizes``: the size of each file of the model; ``single``: ``model`` is
    one file, refused only when it is 0 bytes (whatever its name).
    """
    listed = list(sizes)
    if single:
        if listed and listed[0] == 0:
            raise EmptyModelError(f"{model}: an empty file (0 bytes): nothing to {doing} "
                                  "(an interrupted download?)")
        return
    if not listed:
        raise EmptyModelError(f"{model}: an empty folder: nothing to {doing}")
    if not any(listed):
        raise EmptyModelError(
            f"{model}: no model files: {len(listed)} file(s), all of them empty (0 bytes): "
            f"nothing to {doing} (a partial download, or the wrong folder?)")
