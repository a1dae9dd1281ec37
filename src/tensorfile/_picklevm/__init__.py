"""The pickle machine: one reading of pickle streams, shared by the scanner and the converter.

Nothing here imports, looks up or calls a name found in a pickle. Bottom up:
:mod:`.opcodes` (bytes -> opcodes, as CPython's ``_pickle.c`` reads them),
:mod:`.machine` (opcodes -> the imports and calls they would make, as a graph
of nodes), :mod:`._joblib` (how joblib's ``NumpyUnpickler`` reads on past an
array wrapper), :mod:`._gadgets` (known gadgets), :mod:`.policy` (the
allowlist and a stream's verdict), :mod:`._allowed` (a project's own allowed
globals) and :mod:`._materialize` (real Python values from a checked graph).

:mod:`tensorfile.scan` (files -> pickle streams -> verdicts) and
:mod:`tensorfile.convert` (the same streams with a builder attached) both sit
above this package; it imports neither. spec/SCANNING.md has the rules.
"""
