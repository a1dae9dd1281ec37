"""One check of a model for pipelines: scan, format validation and verification, by a policy.

- :func:`check` (:mod:`.runner`): a model file or folder and a :class:`Policy`
  in, a :class:`CheckReport` out (files, findings with stable rule ids,
  verification), with one exit code.
- :func:`load_policy`, :func:`find_policy` (:mod:`.policy`): ``tensorfile.toml``
  or ``[tool.tensorfile]`` in ``pyproject.toml``, parsed strictly.
- :func:`to_sarif` (:mod:`.sarif`): findings as a SARIF 2.1.0 log.

This package sits above :mod:`tensorfile.scan` and
:mod:`tensorfile.integrity`; nothing below imports it.
"""

from tensorfile.check.findings import RULES, CheckFinding, Rule
from tensorfile.check.policy import Bounds, Keyless, Policy, Trust, find_policy, load_policy
from tensorfile.check.runner import CheckReport, FileStatus, Verification, check

__all__ = [
    "RULES",
    "Bounds",
    "CheckFinding",
    "CheckReport",
    "FileStatus",
    "Keyless",
    "Policy",
    "Rule",
    "Trust",
    "Verification",
    "check",
    "find_policy",
    "load_policy",
]
