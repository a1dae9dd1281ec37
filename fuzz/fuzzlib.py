"""What every harness in fuzz/ shares: instrumentation, the entry point, replay.

A harness is a script ``fuzz/fuzz_<name>.py`` that defines ``TestOneInput(data)``
and ends with ``fuzzlib.main(TestOneInput, "<name>")``. ``TestOneInput`` checks
the contract of one parser: it returns quietly when the input is handled as
documented (accepted and consistent, or refused with a
:class:`tensorfile.errors.TensorfileError`) and raises anything else, which
atheris reports as a finding.

Run one harness:

* ``python fuzz/fuzz_header.py [libFuzzer flags] [CORPUS_DIR ...]`` fuzzes with
  atheris (coverage of the ``tensorfile`` package only);
* ``python fuzz/fuzz_header.py --replay [FILE_OR_DIR ...]`` (or any run where
  atheris is not installed) runs each input once, by default the checked-in
  seeds ``fuzz/corpus/<name>/``, crash reproducers ``fuzz/regressions/<name>/``
  and :data:`EXTRA_SEEDS`.

pytest replays the same seeds through ``tests/fuzz/test_fuzz_regressions.py``,
so a harness never needs atheris to be useful.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FUZZ_DIR = Path(__file__).resolve().parent
REPO = FUZZ_DIR.parent
#: The shared material beside the checkout (read at run time when present).
SHARED = REPO.parent / "shared"

try:
    import atheris
except ImportError:  # replay still works
    atheris = None


def instrumented(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Instrument ``tensorfile`` imports for coverage when fuzzing, else do nothing.

    Harnesses wrap their ``tensorfile`` imports in this; ``enabled`` is
    ``__name__ == "__main__"`` so importing a harness from pytest does not try
    to instrument modules that are already loaded.
    """
    if enabled and atheris is not None and "--replay" not in sys.argv:
        return atheris.instrument_imports(include=["tensorfile"])
    return contextlib.nullcontext()


#: Seed folders kept elsewhere in the repository, by harness: the format's test
#: vectors (spec/vectors/, made by spec/make_vectors.py) seed the header harness.
EXTRA_SEEDS = {"header": [REPO / "spec" / "vectors"]}


def seed_dirs(name: str) -> list[Path]:
    """The existing input folders of harness ``name``: its seeds, its crash
    reproducers, and any seed folder elsewhere in the repository."""
    dirs = [FUZZ_DIR / "corpus" / name, FUZZ_DIR / "regressions" / name, *EXTRA_SEEDS.get(name, [])]
    return [d for d in dirs if d.is_dir()]


def iter_inputs(paths: list[Path]) -> Iterator[Path]:
    """Every regular file under ``paths`` (files as given, folders recursively, sorted)."""
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.name != "README.md")
        elif p.is_file():
            yield p


def replay(test_one_input: Callable[[bytes], None], paths: list[Path]) -> int:
    """Run each input once; print and count the ones that break the contract."""
    failures = 0
    count = 0
    for f in iter_inputs(paths):
        count += 1
        try:
            test_one_input(f.read_bytes())
        except Exception as e:  # report every failing input, not only the first
            failures += 1
            print(f"FAIL {f}: {type(e).__name__}: {e}", file=sys.stderr)
    print(f"replayed {count} inputs, {failures} failed")
    return 1 if failures else 0


def main(test_one_input: Callable[[bytes], None], name: str) -> None:
    """Entry point of a harness script: fuzz with atheris, or replay inputs."""
    args = sys.argv[1:]
    if atheris is None or "--replay" in args:
        given = [Path(a) for a in args if not a.startswith("-")]
        sys.exit(replay(test_one_input, given or seed_dirs(name)))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


class Scratch:
    """One reusable file per process for parsers that need a path, not bytes."""

    def __init__(self, suffix: str) -> None:
        fd, name = tempfile.mkstemp(prefix="tensorfile-fuzz-", suffix=suffix)
        os.close(fd)
        self.path = Path(name)

    def write(self, data: bytes) -> Path:
        self.path.write_bytes(data)
        return self.path


@contextlib.contextmanager
def no_unpickling() -> Iterator[None]:
    """Make every stdlib unpickling entry point fail loudly while the block runs.

    tensorfile must never run a pickle. Inside this block a code path that
    reached ``pickle.loads``, an ``Unpickler`` or ``torch.load`` raises
    ``AssertionError`` (never an allowed outcome) instead of executing the
    hostile payload. The originals are restored afterwards, so replaying seeds
    inside pytest leaves other tests alone.
    """

    def refuse(*_a: object, **_k: object) -> Any:
        raise AssertionError("tensorfile called an unpickler on untrusted input")

    targets = [sys.modules[m] for m in ("pickle", "_pickle", "torch") if m in sys.modules]
    saved: list[tuple[Any, str, Any]] = []
    for mod in targets:
        for attr in ("load", "loads", "_load", "_loads", "Unpickler", "_Unpickler"):
            if hasattr(mod, attr):
                saved.append((mod, attr, getattr(mod, attr)))
                setattr(mod, attr, refuse)
    try:
        yield
    finally:
        for mod, attr, value in saved:
            setattr(mod, attr, value)
