"""torch.load as an oracle that runs nothing: what would it import, call and read?

:func:`torch_reads` hands a file to the real ``torch.load(weights_only=False)``
(its real container code: miniz's zip reader, ``tarfile``, the legacy layout,
the C unpickler's framing) with a ``pickle_module`` whose ``Unpickler``

* records every global the stream asks for (``find_class``) and returns an
  inert stand-in class instead of importing anything;
* records every call (``REDUCE``/``NEWOBJ``/``BUILD`` on a stand-in) and every
  persistent id, and answers with more stand-ins (torch's own
  ``persistent_load`` is never reached, so no storage is read or restored);
* records every stream it starts (where it started, how many bytes it read).

Storage classes and dtypes are the one exception: the legacy tar format calls
``storage_type._dtype`` on the class its header names, so a ``torch.*Storage``
(a plain class) is handed out for real. Nothing else the file names is imported.

:func:`pickle_reads` (the C and the pure-Python unpickler), :func:`numpy_reads`
and :func:`joblib_reads` do the same for the other loaders of a model folder.

Used by ``fuzz/fuzz_torchdiff.py``, ``fuzz/fuzz_loaders.py`` and the container
regression tests; never by the library (which must not call ``torch.load`` on
untrusted input).
"""

from __future__ import annotations

import _pickle
import contextlib
import hashlib
import io
import os
import pickle
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Globals handed out for real: plain classes torch's legacy tar reader asks for.
_REAL_OK = frozenset({
    "DoubleStorage", "FloatStorage", "HalfStorage", "LongStorage", "IntStorage",
    "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "BFloat16Storage",
})


@dataclass
class Reading:
    """What one ``torch.load`` reached before it returned or failed."""

    globals: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    pids: int = 0
    #: (digest of the bytes the unpickler consumed, how many) per stream started.
    streams: list[tuple[str, int]] = field(default_factory=list)
    error: str | None = None


class _State:
    current: Reading | None = None


def _rec() -> Reading:
    assert _State.current is not None, "stand-in used outside torch_reads()"
    return _State.current


class _Inert:
    """An object that accepts everything the unpickler does with it and runs nothing."""

    _qual = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        _rec().calls.append(cls._qual)
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        _rec().calls.append(f"{self._qual}()")
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        _rec().calls.append(f"{self._qual}.__setstate__")

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass

    def __reduce__(self) -> Any:  # never pickled again
        raise TypeError("inert")


def _stand_in(module: str, name: str) -> type:
    return type("Inert", (_Inert,), {"_qual": f"{module}.{name}", "__slots__": ()})


class RecordingUnpickler(_pickle.Unpickler):
    """The C unpickler (the one torch.load uses), with nothing importable."""

    def __init__(self, file: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(file, *args, **kwargs)
        self._file = file
        self._start = _tell(file)

    def find_class(self, module: str, name: str) -> Any:
        _rec().globals.append(f"{module}.{name}")
        if module in ("torch", "torch.cuda") and name in _REAL_OK:
            import torch

            return getattr(torch, name)
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _load_from_bytes
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        return _stand_in(module, name)

    def _persistent(self, pid: Any) -> Any:
        _rec().pids += 1
        return _Inert.__new__(_stand_in("persistent", "id"))

    # torch assigns its own persistent_load after construction; keep ours.
    persistent_load = property(lambda self: self._persistent, lambda self, value: None)

    def load(self) -> Any:
        try:
            return super().load()
        finally:
            end = _tell(self._file)
            _rec().streams.append(_consumed(self._file, self._start, end))


def _tell(file: Any) -> int:
    try:
        return int(file.tell())
    except (OSError, AttributeError, ValueError):
        return -1


def _consumed(file: Any, start: int, end: int) -> tuple[str, int]:
    if start < 0 or end < start:
        return ("?", 0)
    try:
        here = file.tell()
        file.seek(start)
        data = file.read(end - start)
        file.seek(here)
    except (OSError, AttributeError, ValueError):
        return ("?", end - start)
    return (hashlib.sha256(data).hexdigest()[:16], len(data))


def _load_from_bytes(b: Any) -> Any:
    """torch.storage._load_from_bytes: ``torch.load(io.BytesIO(b), weights_only=False)``,
    here with the recording module, so a nested stream is followed, not run."""
    _rec().calls.append("torch.storage._load_from_bytes")
    import torch

    if not isinstance(b, (bytes, bytearray)):
        raise TypeError("nested payload is not bytes")
    return torch.load(io.BytesIO(b), weights_only=False,
                      pickle_module=RecordingPickleModule)  # type: ignore[arg-type]


def _latin1_encode(text: Any, encoding: Any = "utf-8", *rest: Any) -> Any:
    """_codecs.encode as py2-compatible pickles use it (latin-1 only, else inert)."""
    _rec().calls.append("_codecs.encode")
    if isinstance(text, str) and encoding in ("latin1", "latin-1") and not rest:
        return text.encode("latin-1")
    return _Inert.__new__(_stand_in("_codecs", "encode"))


class RecordingPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: ``Unpickler`` and ``load``."""

    __name__ = "tensorfile_fuzz_pickle"
    Unpickler = RecordingUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return RecordingUnpickler(file, **kwargs).load()


#: Address space the oracle may add while torch.load runs (see :func:`_memory_cap`).
ORACLE_HEADROOM = 1 << 30


@contextlib.contextmanager
def _memory_cap() -> Iterator[None]:
    """Cap this process's address space while the real unpickler runs.

    The C unpickler trusts a hostile pickle's numbers: ``LONG_BINPUT`` with
    index 2**30 makes it allocate and zero a memo of 2**31 pointers (16 GiB).
    That is torch's and pickle's behaviour, not a scanner finding, so the
    oracle lets such an allocation fail (MemoryError, recorded as torch's
    error) instead of taking the machine down. The soft limit is restored after.
    """
    try:
        import resource

        with open("/proc/self/status") as status:
            vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = vm + ORACLE_HEADROOM
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, OSError, StopIteration, ValueError):  # not Linux: no cap
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def torch_reads(path: str | os.PathLike[str]) -> Reading:
    """Load ``path`` with the real torch.load and the recording, inert unpickler."""
    import torch

    reading = Reading()
    _State.current = reading
    try:
        with warnings.catch_warnings(), _memory_cap():
            warnings.simplefilter("ignore")
            torch.load(path, weights_only=False, map_location="cpu",
                       pickle_module=RecordingPickleModule)  # type: ignore[arg-type]
    except BaseException as exc:  # the oracle records how torch failed; it never fails itself
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        reading.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        _State.current = None
    return reading


def numpy_reads(path: str | os.PathLike[str]) -> Reading:
    """``numpy.load(path, allow_pickle=True)`` with numpy's ``pickle`` swapped for the
    recording, inert module (numpy's own header reading decides what is unpickled)."""
    import numpy as np

    try:
        from numpy.lib import _format_impl as npformat
    except ImportError:  # numpy 1.x
        from numpy.lib import format as npformat  # type: ignore[no-redef]
    reading = Reading()
    _State.current = reading
    saved = npformat.pickle
    npformat.pickle = RecordingPickleModule  # type: ignore[assignment]
    try:
        with warnings.catch_warnings(), _memory_cap():
            warnings.simplefilter("ignore")  # numpy warns about Python 2 headers
            result = np.load(path, allow_pickle=True)
            if hasattr(result, "files"):  # .npz: read every member
                for name in result.files:
                    result[name]
    except Exception as exc:
        reading.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        npformat.pickle = saved
        _State.current = None
    return reading


class RecordingPyUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """The pure-Python unpickler (``pickle._Unpickler``, joblib's), with nothing importable.

    It reads on where the C one stops (a FRAME past the end of the data, a
    last text line without its newline), which is why it is an oracle of its own.
    """

    find_class = RecordingUnpickler.find_class

    def persistent_load(self, pid: Any) -> Any:
        _rec().pids += 1
        return _Inert.__new__(_stand_in("persistent", "id"))


#: Seconds a pure-Python loader may run (see :func:`_time_cap`).
ORACLE_SECONDS = 1.0


@contextlib.contextmanager
def _time_cap(seconds: float) -> Iterator[None]:
    """Interrupt a loader that spends ``seconds`` of CPU (``TimeoutError``, recorded).

    joblib's zlib and gzip readers never finish on bytes after the stream (they
    feed them back to the finished decompressor, growing memory until it runs
    out): joblib's behaviour, not a scanner finding (the scan calls such a file
    an error), so the oracle stops it. CPU time, user and system
    (``ITIMER_PROF``: the spin is mostly page faults), not ``SIGALRM``: libFuzzer's
    own timeout and time budget run on ``SIGALRM``.
    Main thread only (signals).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise TimeoutError(f"loader ran past {seconds} s of CPU")

    old = signal.signal(signal.SIGPROF, stop)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def _read_with(reading: Reading, load: Any) -> Reading:
    _State.current = reading
    try:
        with warnings.catch_warnings(), _memory_cap(), _time_cap(ORACLE_SECONDS):
            warnings.simplefilter("ignore")
            load()
    except BaseException as exc:  # recorded, never raised (as torch_reads)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        reading.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        _State.current = None
    return reading


def pickle_reads(path: str | os.PathLike[str], *, pure_python: bool = False) -> Reading:
    """``pickle.load(open(path, 'rb'))`` with the C unpickler, or ``pickle._Unpickler``
    (``pure_python``), recording every global and running nothing."""
    reading = Reading()
    cls = RecordingPyUnpickler if pure_python else RecordingUnpickler

    def load() -> None:
        with open(path, "rb") as f:
            cls(f).load()
    return _read_with(reading, load)


#: Classes joblib's reader needs for real to read array bytes after a wrapper
#: (plain classes: building them runs no code of the file's choosing).
#: ``_reconstruct`` stays inert: ``ndarray.__setstate__`` on a mutated state can
#: crash the process (a fuzz run died on one), so the reading of an object
#: array's nested pickle stops after it.
_JOBLIB_REAL = frozenset({"joblib.numpy_pickle.NumpyArrayWrapper", "numpy.dtype",
                          "numpy.ndarray", "numpy.memmap"})


def joblib_reads(path: str | os.PathLike[str]) -> Reading:
    """``joblib.load(path)``: its own decompression and ``NumpyUnpickler`` (the
    pure-Python unpickler that reads array bytes after each wrapper), with every
    other global recorded and inert."""
    import joblib
    import joblib.numpy_pickle as jnp

    def find_class(self: Any, module: str, name: str) -> Any:
        qual = f"{module}.{name}"
        if qual in _JOBLIB_REAL:
            _rec().globals.append(qual)
            return pickle._Unpickler.find_class(self, module, name)  # type: ignore[attr-defined]
        return RecordingUnpickler.find_class(self, module, name)

    class Nested(RecordingPyUnpickler):  # object arrays: a fresh pure-Python unpickler
        pass

    Nested.find_class = find_class  # type: ignore[method-assign]
    saved = jnp.NumpyUnpickler.find_class, jnp.Unpickler
    jnp.NumpyUnpickler.find_class = find_class  # type: ignore[method-assign]
    jnp.Unpickler = Nested  # type: ignore[misc]
    try:
        return _read_with(Reading(), lambda: joblib.load(path))
    finally:
        jnp.NumpyUnpickler.find_class, jnp.Unpickler = saved  # type: ignore[method-assign,misc]


def torch_reads_bytes(data: bytes, folder: str | os.PathLike[str]) -> Reading:
    """:func:`torch_reads` on ``data`` written to a file in ``folder`` (torch tries
    tar only on a real file, so the bytes must be a file, not a BytesIO)."""
    path = os.path.join(os.fspath(folder), "oracle-input.pt")
    with open(path, "wb") as f:
        f.write(data)
    return torch_reads(path)


__all__ = ["Reading", "RecordingPickleModule", "joblib_reads", "numpy_reads", "pickle_reads",
           "torch_reads", "torch_reads_bytes"]
