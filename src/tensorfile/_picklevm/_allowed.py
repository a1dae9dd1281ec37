"""Globals a project's policy allows on top of the built-in allowlist (``tensorfile check``).

Training checkpoints carry ``argparse.Namespace``, ``TrainingArguments`` or
OmegaConf objects; a team that trusts such a class allows it once, with a
reason, instead of converting with ``--key`` everywhere. A use of an allowed
global is never folded into ``safe`` silently: the stream keeps a finding of
verdict ``safe`` whose reason starts with :data:`ALLOWED_PREFIX`, and
reports say "allowed by policy (reason)".

What the entry covers: importing the name, calling it, and the
BUILD/SETITEM(S)/APPEND(S) the unpickler then applies to the object the call
returned (that is the class's own code, which the policy vouches for). What
no entry covers: a known gadget (dangerous stays dangerous, and
:func:`allow_problem` refuses the entry up front), a computed or non-literal
name, and changes made to the imported object itself (monkey-patching).
"""

from __future__ import annotations

from collections.abc import Mapping

from tensorfile._picklevm.machine import Call, Effect, GlobalRef, Node
from tensorfile._picklevm.policy import StreamPolicy, classify_global
from tensorfile._report import Finding, Verdict

#: Start of the reason of a finding that records a use of a policy-allowed global.
ALLOWED_PREFIX = "allowed by policy: "


def allow_problem(qualname: str) -> str | None:
    """Why a policy may not allow ``qualname`` (``module.name``), or None if it may."""
    module, _, name = qualname.rpartition(".")
    if not module or not name or any(not p.isidentifier() for p in qualname.split(".")):
        return "not a module.name of Python identifiers"
    verdict, reason = classify_global(GlobalRef(module, name, "GLOBAL", 0))
    if verdict is Verdict.DANGEROUS:
        return f"it can never be allowed ({reason})"
    if verdict is Verdict.SAFE:
        return "it is on the built-in allowlist already"
    return None


class AllowingPolicy(StreamPolicy):
    """:class:`StreamPolicy` plus ``extra`` (``module.name`` -> reason) from a project policy."""

    __slots__ = ("extra",)
    extra: Mapping[str, str]

    def __init__(self, extra: Mapping[str, str], key_pids: bool = False, *,
                 max_findings: int = 1000) -> None:
        super().__init__(False, key_pids, max_findings=max_findings)
        self.extra = extra

    def observe(self, node: Node) -> None:
        ref = node.func if isinstance(node, Call) else (
            node.target.func if isinstance(node, Effect) and isinstance(node.target, Call)
            else node)
        reason = None
        if isinstance(ref, GlobalRef) and ref.literal:
            reason = self.extra.get(ref.qualname)
        if (reason is None or not isinstance(ref, GlobalRef)
                or classify_global(ref)[0] is Verdict.DANGEROUS):
            super().observe(node)
            return
        if node is ref:
            self.globals.setdefault(ref.qualname)
        self.add(Finding(Verdict.SAFE, ALLOWED_PREFIX + reason, node.opcode,
                         node.offset, ref.qualname))
