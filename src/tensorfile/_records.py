"""Small record classes without ``@dataclass``.

``@dataclass`` compiles its methods with ``exec`` each time a module defining
one is imported, and imports ``inspect``: tens of milliseconds on every
``tensorfile scan`` start-up. These bases give the same field-wise ``==`` and
dataclass-style ``repr`` over ``__slots__`` (in field order); subclasses
declare ``__slots__`` and an ``__init__``.
"""

from __future__ import annotations


class Record:
    """Field-wise ``==`` and a dataclass-style ``repr`` over ``__slots__``.

    Mutable, so not hashable (defining ``__eq__`` sets ``__hash__`` to None).
    """

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class FrozenRecord(Record):
    """A :class:`Record` whose fields cannot be assigned after ``__init__``
    (which sets them with ``object.__setattr__``), and so is hashable."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __hash__(self) -> int:
        return hash(self._values())
