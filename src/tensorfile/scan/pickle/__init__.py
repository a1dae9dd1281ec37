"""Pickle files and their containers: every stream a loader would unpickle from a file.

:mod:`.reading` is the family's assessor (it claims every file) in the
registry of :mod:`tensorfile.scan.loaders`;
:mod:`.containers` recognises a file by its bytes (a torch zip, the legacy
and tar layouts, a raw pickle, ``.npy``/``.npz``, joblib's compressions) and
runs each pickle stream through the pickle machine
(:mod:`tensorfile._picklevm`); :mod:`._zip` and :mod:`._tar` read archives as
torch's miniz and :mod:`tarfile` do. The ``.npy`` header and joblib's
compressions have their own modules beside this package
(:mod:`tensorfile.scan.npy`, :mod:`tensorfile.scan.joblib`).
"""
