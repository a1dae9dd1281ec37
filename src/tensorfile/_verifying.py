"""``verify=`` as the readers take it: what a user passed, turned into one :class:`Verifier`.

Shared by the public layer (:mod:`tensorfile._api`), :mod:`tensorfile.sharded`
and :mod:`tensorfile.parallel`, which all take ``verify=`` from users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tensorfile._io.verifier import Verifier

if TYPE_CHECKING:
    from tensorfile.integrity.onload import VerifyWith


def verifier_of(verify: VerifyWith | None) -> Verifier | None:
    """The :class:`Verifier` for ``verify=``, or None when nothing is to be verified."""
    if verify is None:
        return None
    # Imported when asked for: the integrity layer loads cryptography, which
    # an unverified load never needs (bench/bench_startup.py measures imports).
    from tensorfile.integrity.onload import as_verifier

    return as_verifier(verify)
