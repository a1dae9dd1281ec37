"""A symbolic pickle machine: what a stream would import and call, without doing it.

The machine runs the opcodes of one stream (from :mod:`.opcodes`) against a
symbolic stack, memo and MARK stack that follow ``_pickle.c`` exactly (stack
fences at MARKs, POP popping a MARK, MEMOIZE indices, protocol-dependent
``fix_imports`` renaming), but it never imports or calls anything. Every place
where the real unpickler would import or call is turned into a *node* and shown
to an :class:`Observer` at the moment it happens, with its opcode and offset.

Values
------
Stack, memo and containers hold plain data and nodes:

* literals: ``None``, ``bool``, ``int``, ``float``, ``str`` (``LegacyStr`` when
  pushed by the Python 2 STRING opcodes), ``bytes``, :class:`~.opcodes.BytesRef`
  (a large bytes argument, a window over the input buffer), :class:`~.opcodes.Opaque`;
* containers: ``list``, ``tuple``, :class:`PDict`, :class:`PSet` (dicts and sets
  keep their items as lists: hashing attacker-built keys could take exponential
  time, so the machine never hashes a value);
* nodes: :class:`GlobalRef` (GLOBAL, STACK_GLOBAL, INST's class),
  :class:`Call` (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST), :class:`PersistentRef`
  (PERSID, BINPERSID), :class:`ExtensionRef` (EXT1/2/4), and :class:`Effect`
  for the method calls the unpickler makes on an object it did not build
  itself: SETITEM(S) / APPEND(S) / ADDITEMS on anything but a dict/list/set,
  and every BUILD. Effects on a :class:`Call` are also kept, in order, in
  ``call.effects`` (an ``OrderedDict`` gets its items and ``_metadata`` that way).

Shared references stay shared (the memo hands out the same object), so memo
fan-out costs nothing, and nothing here recurses on a value.

Reuse: one interpreter, a policy and a builder attached
--------------------------------------------------------
:func:`run_stream` takes an :class:`Observer`. The scanner's observer
(:class:`tensorfile._picklevm.policy.StreamPolicy`) records a finding per node that
is not on the allowlist and keeps going; a converter passes an observer that
raises on the first such node, so a stream is refused before anything is built.
The stream's result (``StreamResult.root``) is then the value graph described
above, and :func:`materialize` turns it into real Python objects through a
:class:`Builder`: containers become ``dict``/``list``/``tuple``/``set``, and the
builder decides what each global, call, persistent id and effect becomes (for
example ``_rebuild_tensor_v2`` -> a tensor description, ``OrderedDict`` ->
``collections.OrderedDict``). Every value a builder sees has passed the policy
first, so a builder only needs to handle the allowlisted shapes.

Import cost
-----------
The nodes are plain classes with ``__slots__`` and the records are
``NamedTuple`` classes, not dataclasses: ``@dataclass`` generates and compiles
its methods each time the module is imported, which cost several milliseconds
of ``tensorfile scan``'s start-up (benchmarked as a whole process).

Bounds
------
:class:`Limits` caps the stack, the MARK stack, the memo and the number of
container items; exceeding one raises :class:`~tensorfile.errors.ScanLimitError`
(the stream is then reported as ``error``, never ``safe``). Work is linear in
the stream length.
"""

from __future__ import annotations

import _compat_pickle
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

from tensorfile._io.sources import Image
from tensorfile._picklevm.opcodes import Buffer, Op, OpcodeReader
from tensorfile.errors import MalformedPickleError, ScanError, ScanLimitError

#: torch.load's own module renames (``torch.serialization.load_module_mapping``).
_TORCH_MODULE_MAPPING = {"torch.tensor": "torch._tensor"}
#: The name STACK_GLOBAL is given when an operand is not text (the policy
#: treats a name holding it as unknown).
COMPUTED_NAME: Final = "<computed>"
#: The class joblib writes in place of every numpy array (``NEWOBJ``, no
#: arguments). Its instances are never ``str``, which the next rule needs.
JOBLIB_WRAPPER: Final = "joblib.numpy_pickle.NumpyArrayWrapper"


class GlobalRef:
    """Something the unpickler would import: ``module`` and attribute ``name``.

    ``module``/``name`` are after the renames the loader applies (protocol < 3
    ``fix_imports``, torch's module mapping); ``literal`` is False when STACK_GLOBAL
    took its operands from anything but literal text, in which case the names
    are only what the scanner could see (``<computed>`` if not text at all).
    Nodes compare by identity, as the objects the unpickler would make do.
    """

    __slots__ = ("literal", "module", "name", "offset", "opcode")
    module: str
    name: str
    opcode: str
    offset: int
    literal: bool

    def __init__(self, module: str, name: str, opcode: str, offset: int,
                 literal: bool = True) -> None:
        self.module = module
        self.name = name
        self.opcode = opcode
        self.offset = offset
        self.literal = literal

    def __repr__(self) -> str:
        return (f"GlobalRef(module={self.module!r}, name={self.name!r}, opcode={self.opcode!r}, "
                f"offset={self.offset!r}, literal={self.literal!r})")

    @property
    def qualname(self) -> str:
        """``module.name``, the way reports print it."""
        return f"{self.module}.{self.name}"


class Effect:
    """A method call the unpickler makes on an existing object.

    ``opcode`` is SETITEM/SETITEMS (``payload`` = key, value, key, value...),
    APPEND/APPENDS/ADDITEMS (``payload`` = the items) or BUILD
    (``payload`` = ``(state,)``).
    """

    __slots__ = ("offset", "opcode", "payload", "target")
    opcode: str
    offset: int
    target: object
    payload: tuple[object, ...]

    def __init__(self, opcode: str, offset: int, target: object,
                 payload: tuple[object, ...]) -> None:
        self.opcode = opcode
        self.offset = offset
        self.target = target
        self.payload = payload

    def __repr__(self) -> str:  # shallow: values may be huge or deeply shared
        return f"<Effect {self.opcode} at {self.offset}>"


class Call:
    """The result of calling ``func``: REDUCE, NEWOBJ, NEWOBJ_EX, OBJ or INST.

    ``args`` is what the stream supplied (normally a tuple; the policy checks);
    ``kwargs`` only for NEWOBJ_EX. ``effects`` lists, in stream order, the
    SETITEMS/APPENDS/BUILD later applied to the object this call returned.
    """

    __slots__ = ("args", "effects", "func", "kwargs", "offset", "opcode")
    func: object
    args: object
    kwargs: object
    opcode: str
    offset: int
    effects: list[Effect]

    def __init__(self, func: object, args: object, kwargs: object, opcode: str,
                 offset: int, effects: list[Effect] | None = None) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.opcode = opcode
        self.offset = offset
        self.effects = [] if effects is None else effects

    def __repr__(self) -> str:
        func = self.func.qualname if isinstance(self.func, GlobalRef) else type(self.func).__name__
        return f"<Call {self.opcode} {func} at {self.offset}>"


class PersistentRef:
    """A persistent id handed to the loader's ``persistent_load`` (torch: a storage)."""

    __slots__ = ("offset", "opcode", "pid")
    pid: object
    opcode: str
    offset: int

    def __init__(self, pid: object, opcode: str, offset: int) -> None:
        self.pid = pid
        self.opcode = opcode
        self.offset = offset

    def __repr__(self) -> str:
        return f"<PersistentRef {self.opcode} at {self.offset}>"


class ExtensionRef:
    """EXT1/2/4: a lookup in the loading process's ``copyreg`` extension registry."""

    __slots__ = ("code", "offset", "opcode")
    code: int | object
    opcode: str
    offset: int

    def __init__(self, code: int | object, opcode: str, offset: int) -> None:
        self.code = code
        self.opcode = opcode
        self.offset = offset

    def __repr__(self) -> str:
        return f"ExtensionRef(code={self.code!r}, opcode={self.opcode!r}, offset={self.offset!r})"


class PDict:
    """A dict as (key, value) pairs in stream order (duplicates kept, nothing hashed)."""

    __slots__ = ("items",)
    items: list[tuple[object, object]]

    def __init__(self, items: list[tuple[object, object]] | None = None) -> None:
        self.items = [] if items is None else items

    def __repr__(self) -> str:
        return f"<PDict of {len(self.items)} pairs>"


class PSet:
    """A set or frozenset as its items in stream order."""

    __slots__ = ("frozen", "items")
    items: list[object]
    frozen: bool

    def __init__(self, items: list[object] | None = None, frozen: bool = False) -> None:
        self.items = [] if items is None else items
        self.frozen = frozen

    def __repr__(self) -> str:
        return f"<PSet of {len(self.items)} items>"


Node = GlobalRef | Call | PersistentRef | ExtensionRef | Effect


class Observer(Protocol):
    """Sees every import and call as the machine meets it; may raise to stop the stream."""

    def observe(self, node: Node) -> None:
        """Called once per node, in stream order."""


class Limits(NamedTuple):
    """Resource bounds for one stream (generous for real checkpoints)."""

    max_stack: int = 1_000_000
    max_marks: int = 100_000
    max_memo: int = 2_000_000
    max_items: int = 5_000_000


class StreamResult(NamedTuple):
    """What one stream did: where it ran, its value, and why it stopped early if it did."""

    start: int
    end: int
    root: object
    protocol: int
    opcodes: int
    error: ScanError | None = None

    @property
    def complete(self) -> bool:
        """True when the stream reached STOP with a value."""
        return self.error is None


class _Machine:
    def __init__(self, observer: Observer, limits: Limits) -> None:
        self.observer = observer
        self.limits = limits
        self.stack: list[object] = []
        self.marks: list[int] = []
        # A list indexed like _pickle.c's memo array (8 bytes a slot), with the
        # count of filled slots that MEMOIZE uses as its next index.
        self.memo: list[object] = []
        self.memo_filled = 0
        self.proto = 0
        self.items = 0
        self.root: object = None
        # Containers whose keys the real unpickler hashes (hashing_problem).
        self.keyed: list[object] = []

    # -- stack discipline (Pdata with a fence at the innermost MARK) -----------
    def fence(self) -> int:
        return self.marks[-1] if self.marks else 0

    def push(self, value: object, op: Op) -> None:
        if len(self.stack) >= self.limits.max_stack:
            raise ScanLimitError(f"stack deeper than {self.limits.max_stack} at byte {op.offset}")
        self.stack.append(value)

    def pop(self, op: Op) -> object:
        if len(self.stack) <= self.fence():
            raise MalformedPickleError(f"{op.name}: unpickling stack underflow", op.offset)
        return self.stack.pop()

    def top(self, op: Op) -> object:
        if len(self.stack) <= self.fence():
            raise MalformedPickleError(f"{op.name}: unpickling stack underflow", op.offset)
        return self.stack[-1]

    def pop_mark(self, op: Op) -> list[object]:
        if not self.marks:
            raise MalformedPickleError(f"{op.name}: could not find MARK", op.offset)
        at = self.marks.pop()
        items = self.stack[at:]
        del self.stack[at:]
        return items

    def count(self, n: int, op: Op) -> None:
        self.items += n
        if self.items > self.limits.max_items:
            raise ScanLimitError(
                f"more than {self.limits.max_items} container items at byte {op.offset}")

    def emit(self, node: Node) -> None:
        self.observer.observe(node)

    # -- names -----------------------------------------------------------------
    def resolve(self, module: str, name: str, op: Op, *, literal: bool = True) -> GlobalRef:
        if self.proto < 3:  # _pickle.c find_class with fix_imports=True
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        module = _TORCH_MODULE_MAPPING.get(module, module)
        ref = GlobalRef(module, name, op.name, op.offset, literal)
        self.emit(ref)
        return ref

    def effect(self, target: object, op: Op, payload: tuple[object, ...]) -> None:
        eff = Effect(op.name, op.offset, target, payload)
        if isinstance(target, Call):
            target.effects.append(eff)
        self.emit(eff)

    def call(self, func: object, args: object, kwargs: object, op: Op) -> Call:
        node = Call(func, args, kwargs, op.name, op.offset)
        self.emit(node)
        if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], list):
            self.keyed.append(node)  # OrderedDict([[key, value], ...]) hashes its keys
        return node

    # -- container operations ----------------------------------------------------
    def set_items(self, target: object, flat: list[object], op: Op) -> None:
        if len(flat) % 2:
            raise MalformedPickleError(f"odd number of items for {op.name}", op.offset)
        self.count(len(flat) // 2, op)
        self.keyed.append(target)
        if isinstance(target, PDict):
            target.items.extend(zip(flat[::2], flat[1::2], strict=True))
        else:
            self.effect(target, op, tuple(flat))

    def append_items(self, target: object, items: list[object], op: Op) -> None:
        self.count(len(items), op)
        if isinstance(target, list):
            target.extend(items)
        else:
            self.effect(target, op, tuple(items))

    def add_items(self, target: object, items: list[object], op: Op) -> None:
        self.count(len(items), op)
        self.keyed.append(target)
        if isinstance(target, PSet) and not target.frozen:
            target.items.extend(items)
        else:
            self.effect(target, op, tuple(items))

    def below_mark(self, op: Op) -> tuple[object, list[object]]:
        """Items above the innermost MARK and the object just below it (APPENDS etc.)."""
        items = self.pop_mark(op)
        if len(self.stack) <= self.fence():
            raise MalformedPickleError(f"{op.name}: unpickling stack underflow", op.offset)
        return self.stack[-1], items

    def memo_put(self, index: object, value: object, op: Op) -> None:
        if not isinstance(index, int):
            raise MalformedPickleError(f"{op.name}: invalid memo index", op.offset)
        if index >= self.limits.max_memo:
            # Real pickles number memo slots densely from 0; _pickle.c would
            # allocate an array this large.
            raise ScanLimitError(f"memo index {index} over the limit of {self.limits.max_memo}")
        if index >= len(self.memo):
            self.memo.extend([_EMPTY] * (index + 1 - len(self.memo)))
        if self.memo[index] is _EMPTY:
            self.memo_filled += 1
        self.memo[index] = value

    def memo_get(self, index: object, op: Op) -> object:
        value = self.memo[index] if isinstance(index, int) and 0 <= index < len(self.memo) \
            else _EMPTY
        if value is _EMPTY:
            raise MalformedPickleError(f"{op.name}: memo value not found at {index!r}", op.offset)
        return value

    # -- the opcodes ---------------------------------------------------------------
    def step(self, op: Op) -> bool:
        """Execute one opcode; False after STOP."""
        name = op.name
        if name in _PUSH_ARG:
            value = op.arg
        else:
            make = _PUSH_NEW.get(name)
            if make is None:
                if name == "STOP":
                    self.root = self.pop(op)
                    return False
                _DISPATCH[name](self, op)
                return True
            value = make()
        stack = self.stack
        if len(stack) >= self.limits.max_stack:
            raise ScanLimitError(f"stack deeper than {self.limits.max_stack} at byte {op.offset}")
        stack.append(value)
        return True

    def op_MARK(self, op: Op) -> None:
        if len(self.marks) >= self.limits.max_marks:
            raise ScanLimitError(f"more than {self.limits.max_marks} nested MARKs")
        self.marks.append(len(self.stack))

    def op_POP(self, op: Op) -> None:
        if self.marks and self.marks[-1] == len(self.stack):
            self.marks.pop()  # load_pop: a POP right after MARK discards the MARK
        else:
            self.pop(op)

    def op_POP_MARK(self, op: Op) -> None:
        self.pop_mark(op)

    def op_DUP(self, op: Op) -> None:
        self.push(self.top(op), op)

    def op_PROTO(self, op: Op) -> None:
        assert isinstance(op.arg, int)
        self.proto = op.arg

    def op_FRAME(self, op: Op) -> None:
        """The reader already checked the frame length; frames change nothing else."""

    def op_PERSID(self, op: Op) -> None:
        ref = PersistentRef(op.arg, op.name, op.offset)
        self.emit(ref)
        self.push(ref, op)

    def op_BINPERSID(self, op: Op) -> None:
        ref = PersistentRef(self.pop(op), op.name, op.offset)
        self.emit(ref)
        self.push(ref, op)

    def op_REDUCE(self, op: Op) -> None:
        args = self.pop(op)
        func = self.pop(op)
        self.push(self.call(func, args, None, op), op)

    def op_NEWOBJ(self, op: Op) -> None:
        args = self.pop(op)
        cls = self.pop(op)
        self.push(self.call(cls, args, None, op), op)

    def op_NEWOBJ_EX(self, op: Op) -> None:
        kwargs = self.pop(op)
        args = self.pop(op)
        cls = self.pop(op)
        self.push(self.call(cls, args, kwargs, op), op)

    def op_OBJ(self, op: Op) -> None:
        items = self.pop_mark(op)
        if not items:
            raise MalformedPickleError("OBJ: unpickling stack underflow", op.offset)
        self.push(self.call(items[0], tuple(items[1:]), None, op), op)

    def op_INST(self, op: Op) -> None:
        assert isinstance(op.arg, tuple)
        module, qualname = op.arg
        cls = self.resolve(module, qualname, op)
        args = tuple(self.pop_mark(op))
        self.push(self.call(cls, args, None, op), op)

    def op_GLOBAL(self, op: Op) -> None:
        assert isinstance(op.arg, tuple)
        module, qualname = op.arg
        self.push(self.resolve(module, qualname, op), op)

    def op_STACK_GLOBAL(self, op: Op) -> None:
        name = self.pop(op)
        module = self.pop(op)
        if any(_joblib_wrapper(x) for x in (module, name)):
            # Both unpicklers require exact str operands ("STACK_GLOBAL requires
            # str") and stop. pickle.load meets this reading a joblib object
            # array: the nested pickle after the wrapper names its globals
            # through a memo of its own, which the outer stream's memo is not.
            raise MalformedPickleError("STACK_GLOBAL requires str (an operand is a joblib "
                                       "array wrapper)", op.offset)
        # Only literal text (possibly via the memo) names a fixed import; text
        # from the Python 2 STRING opcodes or any computed value does not.
        literal = type(name) is str and type(module) is str
        self.push(self.resolve(_name_of(module), _name_of(name), op, literal=literal), op)

    def op_EXT1(self, op: Op) -> None:
        ref = ExtensionRef(op.arg, op.name, op.offset)
        self.emit(ref)
        self.push(ref, op)

    op_EXT2 = op_EXT1
    op_EXT4 = op_EXT1

    def op_BUILD(self, op: Op) -> None:
        state = self.pop(op)
        self.effect(self.top(op), op, (state,))

    def op_APPEND(self, op: Op) -> None:
        value = self.pop(op)
        self.append_items(self.top(op), [value], op)

    def op_APPENDS(self, op: Op) -> None:
        target, items = self.below_mark(op)
        self.append_items(target, items, op)

    def op_SETITEM(self, op: Op) -> None:
        value = self.pop(op)
        key = self.pop(op)
        self.set_items(self.top(op), [key, value], op)

    def op_SETITEMS(self, op: Op) -> None:
        target, items = self.below_mark(op)
        self.set_items(target, items, op)

    def op_ADDITEMS(self, op: Op) -> None:
        target, items = self.below_mark(op)
        self.add_items(target, items, op)

    def op_DICT(self, op: Op) -> None:
        d = PDict()
        self.set_items(d, self.pop_mark(op), op)
        self.push(d, op)

    def op_LIST(self, op: Op) -> None:
        items = self.pop_mark(op)
        self.count(len(items), op)
        self.push(items, op)

    def op_TUPLE(self, op: Op) -> None:
        items = self.pop_mark(op)
        self.count(len(items), op)
        self.push(tuple(items), op)

    def op_FROZENSET(self, op: Op) -> None:
        items = self.pop_mark(op)
        self.count(len(items), op)
        self.push(PSet(items, frozen=True), op)
        self.keyed.append(self.stack[-1])

    def _tuple_n(self, n: int, op: Op) -> None:
        items = [self.pop(op) for _ in range(n)]
        items.reverse()
        self.push(tuple(items), op)

    def op_TUPLE1(self, op: Op) -> None:
        self._tuple_n(1, op)

    def op_TUPLE2(self, op: Op) -> None:
        self._tuple_n(2, op)

    def op_TUPLE3(self, op: Op) -> None:
        self._tuple_n(3, op)

    def op_PUT(self, op: Op) -> None:
        self.memo_put(op.arg, self.top(op), op)

    op_BINPUT = op_PUT
    op_LONG_BINPUT = op_PUT

    def op_MEMOIZE(self, op: Op) -> None:
        self.memo_put(self.memo_filled, self.top(op), op)

    def op_GET(self, op: Op) -> None:
        self.push(self.memo_get(op.arg, op), op)

    op_BINGET = op_GET
    op_LONG_BINGET = op_GET

    def op_NEXT_BUFFER(self, op: Op) -> None:
        # torch.load and pickle.load pass no out-of-band buffers: the C
        # unpickler raises here, so the stream ends.
        raise MalformedPickleError("NEXT_BUFFER without out-of-band buffers", op.offset)

    def op_READONLY_BUFFER(self, op: Op) -> None:
        self.top(op)


_EMPTY = object()  # an unfilled memo slot
_DISPATCH: dict[str, Callable[[_Machine, Op], None]] = {
    name[3:]: getattr(_Machine, name) for name in dir(_Machine) if name.startswith("op_")
}


def _joblib_wrapper(value: object) -> bool:
    """A ``NumpyArrayWrapper`` instance (NEWOBJ of the literal class): never a str."""
    return (isinstance(value, Call) and value.opcode == "NEWOBJ"
            and isinstance(value.func, GlobalRef) and value.func.literal
            and value.func.qualname == JOBLIB_WRAPPER)


def _name_of(value: object) -> str:
    return str(value) if isinstance(value, str) else COMPUTED_NAME


#: Opcodes that push their decoded argument as it is.
_PUSH_ARG: frozenset[str] = frozenset({
    "FLOAT", "INT", "BININT", "BININT1", "LONG", "BININT2", "STRING", "BINSTRING",
    "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "BINFLOAT", "LONG1", "LONG4",
    "BINBYTES", "SHORT_BINBYTES", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES8",
    "BYTEARRAY8",
})
#: Opcodes that push a constant or a new empty container.
_PUSH_NEW: dict[str, Callable[[], object]] = {
    "NONE": lambda: None,
    "NEWTRUE": lambda: True,
    "NEWFALSE": lambda: False,
    "EMPTY_TUPLE": tuple,
    "EMPTY_LIST": list,
    "EMPTY_DICT": PDict,
    "EMPTY_SET": PSet,
}


def run_stream(
    buf: Buffer,
    start: int,
    observer: Observer,
    *,
    end: int | None = None,
    limits: Limits | None = None,
    after_build: Callable[[object, OpcodeReader], None] | None = None,
) -> StreamResult:
    """Run the pickle stream at ``buf[start:]`` symbolically and return what it did.

    Never raises for bad input: a malformed stream or an exceeded limit is
    returned in ``StreamResult.error`` together with everything observed up to
    that point (a payload before the break has already been shown to
    ``observer``). Exceptions raised by ``observer`` itself propagate, which is
    how a converter stops at the first disallowed node.

    ``after_build(obj, reader)`` is called after every BUILD with the object
    built, and may move ``reader.pos`` over bytes the loader reads outside the
    pickle (joblib's array data, :func:`tensorfile._picklevm._joblib.array_skip`).
    """
    if type(buf) is Image:  # a file copied in as read: a real buffer for short streams
        buf = buf.buffer_for(start, len(buf) if end is None else min(end, len(buf)))
    reader = OpcodeReader(buf, start, end)
    machine = _Machine(observer, limits or Limits())
    count = 0
    error: ScanError | None = None
    try:
        for op in reader:
            count += 1
            if not machine.step(op):
                break
            if after_build is not None and op.code == 0x62:  # BUILD
                after_build(machine.stack[-1], reader)
    except ScanError as exc:
        error = exc
    if error is None and reader.ambiguity is not None:  # frames with two readings
        error = reader.ambiguity
    if error is None or type(error) is MalformedPickleError:
        # What the real unpickler hashed up to where it stopped (the machine never hashes).
        problem = hashing_problem(machine.keyed, walk=False)
        if problem is not None:
            error = ScanLimitError(f"hashing bound: {problem}")
    return StreamResult(start, reader.pos,
                        machine.root if error is None or error is reader.ambiguity else None,
                        machine.proto, count, error)


def is_leaf(value: object) -> bool:
    """Whether ``value`` is a literal of the value graph (no children to build)."""
    return not isinstance(value, (list, tuple, PDict, PSet, GlobalRef, Call, PersistentRef,
                                  ExtensionRef))


def children(value: object) -> Iterable[object]:
    """The nodes ``value`` refers to, which are built before it."""
    if isinstance(value, (list, tuple)):
        return value
    if isinstance(value, PDict):
        return [x for pair in value.items for x in pair]
    if isinstance(value, PSet):
        return value.items
    if isinstance(value, Call):
        effects = [x for eff in value.effects for x in eff.payload]
        return [value.func, value.args, value.kwargs, *effects]
    if isinstance(value, PersistentRef):
        return [value.pid]
    return []



#: Items hashed while building one stream's dicts and sets, the items of tuple
#: keys included: a tuple does not cache its hash, so tuples nested n deep
#: through the memo (``t = (t, t)``) take 2**n steps to hash. Real checkpoints
#: hash one str or int per state-dict entry, at most a few million.
MAX_HASHED_ITEMS: Final = 5_000_000
#: Unequal keys of one dict (or items of one set) that may share a hash value.
#: Inserting n such keys compares each with every one before it (n**2/2
#: steps), and a pickle can choose them: ints that differ by a multiple of
#: 2**61 - 1 hash alike. Hashes of honest keys practically never coincide.
MAX_SAME_HASH: Final = 64


def _hashed_keys(node: object) -> list[object]:
    """What building ``node`` hashes: dict keys, set items, OrderedDict SETITEMS keys."""
    if isinstance(node, PDict):
        return [k for k, _ in node.items]
    if isinstance(node, PSet):
        return list(node.items)
    if isinstance(node, Call):
        # Python 2's OrderedDict.__reduce__ passes its items as [key, value] pairs.
        pairs = node.args[0] if isinstance(node.args, tuple) and len(node.args) == 1 \
            and isinstance(node.args[0], list) else []
        return [p[0] for p in pairs if isinstance(p, (list, tuple)) and len(p) == 2] + [
            k for eff in node.effects if eff.opcode in ("SETITEM", "SETITEMS")
            for k in eff.payload[::2]]
    return []


def _hash_cost(key: object, costs: dict[int, int]) -> int:
    """Items hashing ``key`` visits: 1, or a tuple's own plus its tuple items' (memoized,
    saturating past :data:`MAX_HASHED_ITEMS`)."""
    if not isinstance(key, tuple):
        return 1
    work: list[tuple[tuple[object, ...], bool]] = [(key, False)]
    while work:
        node, expanded = work.pop()
        if id(node) in costs:
            continue
        inner = [x for x in node if isinstance(x, tuple)]
        if not expanded:
            work.append((node, True))
            work.extend((x, False) for x in inner if id(x) not in costs)
            continue
        costs[id(node)] = min(1 + len(node) + sum(costs[id(x)] for x in inner),
                              MAX_HASHED_ITEMS + 1)
    return costs[id(key)]


def _collisions(keys: list[object], where: str) -> str | None:
    buckets: dict[int, list[object]] = {}
    for key in keys:
        try:
            buckets.setdefault(hash(key), []).append(key)
        except TypeError:  # unhashable: building refuses it
            continue
    for same in buckets.values():
        if len(same) > MAX_SAME_HASH and any(k != same[0] for k in same):
            return (f"{where}: {len(same)} keys, not all equal, share one hash value (more "
                    f"than {MAX_SAME_HASH}): building the container would take quadratic time")
    return None


def hashing_problem(roots: Iterable[object], *, walk: bool = True) -> str | None:
    """Why building the dicts and sets under ``roots`` would be slow (None: it would not).

    ``walk=False`` checks ``roots`` themselves only (the machine lists every
    container whose keys get hashed as it fills it), not what lies under them.

    ``pickle.load`` and ``torch.load`` hash every dict key and set item they
    build (the machine never does). The total items hashed, tuple keys counted
    by their nested items, must stay within :data:`MAX_HASHED_ITEMS`, and no
    more than :data:`MAX_SAME_HASH` unequal keys of one container may share a
    hash. Linear in the graph: every node and every tuple is visited once.
    """
    costs: dict[int, int] = {}
    total = 0
    seen: set[int] = set()
    work = list(roots)
    while work:
        node = work.pop()
        if id(node) in seen or is_leaf(node):
            continue
        seen.add(id(node))
        keys = _hashed_keys(node)
        if keys:
            where = (f"{node.opcode} at byte {node.offset}" if isinstance(node, Call)
                     else f"a {'set' if isinstance(node, PSet) else 'dict'}")
            total += sum(_hash_cost(k, costs) for k in keys)
            if total > MAX_HASHED_ITEMS:
                return (f"{where}: building the stream's dicts and sets would hash more than "
                        f"{MAX_HASHED_ITEMS:,} items (keys that are tuples shared through the "
                        "memo hash once per path)")
            if len(keys) > MAX_SAME_HASH:
                problem = _collisions(keys, where)
                if problem is not None:
                    return problem
        if walk:
            work.extend(children(node))
    return None
