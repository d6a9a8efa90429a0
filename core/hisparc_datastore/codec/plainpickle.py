"""Reads a pickle into plain data only, at a cost that grows with the pickle's size and no faster.

Python's own unpickler builds whatever a pickle describes and only lets us
refuse the globals it names. A station that knows its password can still
send a few hundred bytes that cost minutes and gigabytes without naming a
single global: one list referenced ten times per level through the memo
(10^9 slots when walked), a tuple of such used as a dict key (hashed while
loading), thousands of int keys with equal hashes, a 100 kB int referenced
15,000 times, 100,000 nested lists. This module interprets the pickle
opcodes itself and builds only what station data is made of:

- ``list``, ``dict`` with ``str`` keys, ``str``, ``bytes``, ``int`` (at most
  :data:`MAX_INT_BITS` bits), ``float``, ``bool``, ``None`` and
  ``datetime.datetime``; the numpy scalars the Raspberry Pi DAQ sends become
  plain numbers. Tuples exist only as the arguments of those few calls.
- A list or dict the memo hands out again (Python's pickler writes an
  object used twice, such as one datalist sent with two events, once and
  refers to it after) is copied, so the result is a tree: no object is
  reachable twice, and no change through one reference shows through
  another. A container is sealed once it is handed out again: filling it
  afterwards (a container inside itself, the only way to make a cycle) is
  refused.
- What memo references expand to is counted: a string by its length, a
  copied container by its whole subtree (entries and strings). All of it
  together may be at most :data:`MAX_REFERENCED_FACTOR` times the pickle's
  size plus :data:`REFERENCED_SLACK`, so no reference multiplies work
  beyond that bound, and walking the result costs at most that much more
  than building it.
- Containers nest at most ``max_depth`` deep: the shape of the data, not
  Python's recursion limit, decides.

Every decode starts from fresh state: nothing one pickle does can change how
the next one is read.
"""

from __future__ import annotations

import codecs
import datetime
import pickletools
import struct
from typing import Any

from hisparc_datastore.codec.allowlist import (
    GLOBALS,
    Dtype,
    Global,
    NotPlainData,
    PickleError,
    build,
    kind,
    reduce,
)

MAX_INT_BITS = 128  # beyond any column (uint64), so a misfit still gets its own per-event reason
#: What memo references may expand to, per byte of the pickle: station pickles re-reference short
#: keys and codes (about 2x their size), and a shared datalist adds about 3x its own size per use.
MAX_REFERENCED_FACTOR = 8
#: Added to that bound (a few tens of milliseconds of copying), so that an upload sharing one
#: config datalist among a hundred events is never refused however small it is.
REFERENCED_SLACK = 1 << 22
# What a copy costs, about the bytes of memory it takes: a container, each of its entries, and
# (for the work downstream, such as decoding a trace once per reference) the strings in it.
_CONTAINER_COST = 64
_ENTRY_COST = 16
_MAX_LINE = 64  # longest text argument of INT, LONG, FLOAT, PUT and GET worth reading
_MAX_TUPLE = 8  # the longest tuple a station pickle needs (a numpy dtype's state)


_LEAVES = (str, bytes, int, float, bool, type(None), datetime.datetime)
_SCALAR_TYPES = frozenset({str, bytes, int, float, bool, type(None), datetime.datetime})


def _leaf_size(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value) + 1
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 8 + 1
    return 8


def _check_int(value: int) -> int:
    if value.bit_length() > MAX_INT_BITS:
        raise NotPlainData(f"an integer of {value.bit_length()} bits (at most {MAX_INT_BITS})")
    return value


class _Reader:
    """One pass over one pickle. Containers carry their height, so depth is checked as they nest."""

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.heights: dict[int, int] = {}  # id(container) -> containers nested in it, itself included
        self.referenced = 0
        self.sealed: set[int] = set()  # id(container) handed out again, and the copies handed out
        self.budget = MAX_REFERENCED_FACTOR * len(data) + REFERENCED_SLACK

    # -- reading the byte stream --------------------------------------------

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise PickleError(f"pickle ends inside an argument at byte {self.pos}")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def line(self) -> bytes:
        end = self.data.find(b"\n", self.pos, self.pos + _MAX_LINE + 1)
        if end < 0:
            if self.data.find(b"\n", self.pos) >= 0:
                raise NotPlainData(f"a number or name of over {_MAX_LINE} characters at byte {self.pos}")
            raise PickleError(f"text argument at byte {self.pos} is unterminated")
        chunk = self.data[self.pos:end]
        self.pos = end + 1
        return chunk

    def long_line(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise PickleError(f"text argument at byte {self.pos} is unterminated")
        chunk = self.data[self.pos:end]
        self.pos = end + 1
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    # -- the stack ----------------------------------------------------------

    def pop_mark(self) -> list:
        if not self.marks:
            raise PickleError("pickle closes a mark it never opened")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def top(self) -> Any:
        if not self.stack:
            raise PickleError("pickle pops an empty stack")
        return self.stack[-1]

    def value(self, item: Any, height: int) -> int:
        """Check that ``item`` may go into a container; return the container's height with it."""
        if item.__class__ in _SCALAR_TYPES:
            return height
        child = self.heights.get(id(item))
        if child is None:
            raise NotPlainData(f"{kind(item)} is not plain data")
        if child + 1 > height:
            if child + 1 > self.max_depth:
                raise NotPlainData(f"containers nest deeper than {self.max_depth}, the depth of the data")
            return child + 1
        return height

    def fill_list(self, target: Any, items: list) -> None:
        if target.__class__ is not list or id(target) not in self.heights:
            raise NotPlainData(f"APPEND to {kind(target)}")
        if id(target) in self.sealed:
            raise _changed_after_shared(target)
        height = self.heights[id(target)]
        for item in items:
            height = self.value(item, height)
        self.heights[id(target)] = height
        target.extend(items)

    def fill_dict(self, target: Any, items: list) -> None:
        if target.__class__ is not dict or id(target) not in self.heights:
            raise NotPlainData(f"SETITEM on {kind(target)}")
        if id(target) in self.sealed:
            raise _changed_after_shared(target)
        if len(items) % 2:
            raise PickleError("SETITEMS with an odd number of items")
        height = self.heights[id(target)]
        for i in range(0, len(items), 2):
            key = items[i]
            # Only str keys: their hashes are randomised, so no upload can make them collide.
            if key.__class__ is not str:
                raise NotPlainData(f"a dict key is {kind(key)}, not text")
            height = self.value(items[i + 1], height)
            target[key] = items[i + 1]
        self.heights[id(target)] = height

    def shared(self, original: list | dict) -> list | dict:
        """A copy of a container the memo hands out again, its whole subtree charged to the budget.

        The original and the copy are sealed: Python's pickler refers to a container again only
        once it is complete, unless the container is inside itself."""
        self.sealed.add(id(original))
        copy = self.copy(original)
        self.heights[id(copy)] = self.heights[id(original)]
        self.sealed.add(id(copy))
        return copy

    def copy(self, original: list | dict) -> list | dict:
        copy = original.copy()
        self.referenced += _CONTAINER_COST + _ENTRY_COST * len(copy)
        if self.referenced > self.budget:
            raise self.over_budget()
        if copy.__class__ is list:
            for i, item in enumerate(copy):
                if item.__class__ is list or item.__class__ is dict:
                    copy[i] = self.copy(item)
                elif item.__class__ is str or item.__class__ is bytes:
                    self.referenced += len(item)
        else:
            for key, item in copy.items():
                if item.__class__ is list or item.__class__ is dict:
                    copy[key] = self.copy(item)
                elif item.__class__ is str or item.__class__ is bytes:
                    self.referenced += len(item)
        if self.referenced > self.budget:
            raise self.over_budget()
        return copy

    def over_budget(self) -> NotPlainData:
        return NotPlainData(
            f"shared references expand the pickle's {len(self.data)} bytes beyond {self.budget} "
            f"(the bound on shared references: {MAX_REFERENCED_FACTOR} times the pickle's size "
            f"plus {REFERENCED_SLACK >> 20} MiB)")

    def tuple_of(self, items: list) -> tuple:
        if len(items) > _MAX_TUPLE:
            raise NotPlainData(f"a tuple of {len(items)} items")
        for item in items:
            if not isinstance(item, (*_LEAVES, Global, Dtype)):
                raise NotPlainData(f"a tuple holds {kind(item)}")
        return tuple(items)

    # -- the opcodes ----------------------------------------------------------

    def run(self) -> Any:
        """Interpret the pickle. The opcodes station pickles are made of are handled inline
        (a call per opcode would cost more than the opcode); the rest through _DISPATCH."""
        data, stack, memo, heights, marks = self.data, self.stack, self.memo, self.heights, self.marks
        sealed = self.sealed
        push = stack.append
        scalars = _SCALAR_TYPES
        pos, size = 0, len(data)
        while pos < size:
            op = data[pos]
            pos += 1
            if op == 0x94:  # MEMOIZE
                if not stack:
                    raise PickleError("MEMOIZE on an empty stack")
                memo[len(memo)] = stack[-1]
            elif op == 0x8C or op == 0x55:  # SHORT_BINUNICODE, SHORT_BINSTRING
                end = pos + 1 + data[pos]
                if end > size:
                    raise PickleError(f"pickle ends inside an argument at byte {pos}")
                push(data[pos + 1:end].decode("utf-8" if op == 0x8C else "latin-1"))
                pos = end
                if pos < size and data[pos] == 0x94:  # protocol 4 memoizes it at once: one turn, not two
                    memo[len(memo)] = stack[-1]
                    pos += 1
            elif op == 0x71 or op == 0x70:  # BINPUT, PUT
                if not stack:
                    raise PickleError("PUT on an empty stack")
                if op == 0x71:
                    memo[data[pos]] = stack[-1]
                    pos += 1
                else:
                    end = data.find(b"\n", pos, pos + _MAX_LINE)
                    if end < 0 or not data[pos:end].isdigit():
                        raise PickleError(f"PUT at byte {pos - 1} has no memo index")
                    memo[int(data[pos:end])] = stack[-1]
                    pos = end + 1
            elif op == 0x6A or op == 0x68 or op == 0x67:  # LONG_BINGET, BINGET, GET
                if op == 0x6A:
                    index = int.from_bytes(data[pos:pos + 4], "little")
                    pos += 4
                elif op == 0x68:
                    index = data[pos]
                    pos += 1
                else:
                    end = data.find(b"\n", pos, pos + _MAX_LINE)
                    if end < 0 or not data[pos:end].isdigit():
                        raise PickleError(f"GET at byte {pos - 1} has no memo index")
                    index = int(data[pos:end])
                    pos = end + 1
                item = memo.get(index, memo)
                if item.__class__ is str or item.__class__ is bytes:
                    self.referenced += len(item) + 1
                elif item is memo:
                    raise PickleError(f"memo reference {index} was never stored")
                elif id(item) in heights:
                    item = self.shared(item)
                elif item.__class__ is tuple:
                    raise NotPlainData("a tuple is referenced twice: tuples are only the arguments of a call")
                else:
                    self.referenced += _leaf_size(item)
                if self.referenced > self.budget:
                    raise self.over_budget()
                push(item)
            elif op == 0x28:  # MARK
                marks.append(len(stack))
            elif op == 0x7D:  # EMPTY_DICT
                target = {}
                heights[id(target)] = 1
                push(target)
                if pos < size and data[pos] == 0x94:
                    memo[len(memo)] = target
                    pos += 1
            elif op == 0x75 or op == 0x64:  # SETITEMS, DICT
                if not marks:
                    raise PickleError("pickle closes a mark it never opened")
                start = marks.pop()
                items = stack[start:]
                del stack[start:]
                if op == 0x64:
                    target = {}
                    heights[id(target)] = 1
                    push(target)
                elif not stack:
                    raise PickleError("SETITEMS without a dict")
                target = stack[-1]
                if target.__class__ is not dict or id(target) not in heights:
                    raise NotPlainData(f"SETITEM on {kind(target)}")
                if sealed and id(target) in sealed:
                    raise _changed_after_shared(target)
                if len(items) % 2:
                    raise PickleError("SETITEMS with an odd number of items")
                height = heights[id(target)]
                for i in range(0, len(items), 2):
                    key, item = items[i], items[i + 1]
                    # Only str keys: their hashes are randomised, so no upload can make them collide.
                    if key.__class__ is not str:
                        raise NotPlainData(f"a dict key is {kind(key)}, not text")
                    if item.__class__ not in scalars:
                        height = self.value(item, height)
                    target[key] = item
                heights[id(target)] = height
            elif op == 0x73:  # SETITEM
                if len(stack) < 3:
                    raise PickleError("SETITEM without a dict")
                item = stack.pop()
                key = stack.pop()
                target = stack[-1]
                # every dict on the stack is one this reader made, so only the key and value need a look
                if (target.__class__ is dict and key.__class__ is str and item.__class__ in scalars
                        and not (sealed and id(target) in sealed)):
                    target[key] = item
                else:
                    self.fill_dict(target, [key, item])
            elif op == 0x4B:  # BININT1
                push(data[pos])
                pos += 1
            elif op == 0x4D:  # BININT2
                push(data[pos] | data[pos + 1] << 8)
                pos += 2
            elif op == 0x4A:  # BININT
                push(int.from_bytes(data[pos:pos + 4], "little", signed=True))
                pos += 4
            elif op == 0x58:  # BINUNICODE
                end = pos + 4 + int.from_bytes(data[pos:pos + 4], "little")
                if end > size or pos + 4 > size:
                    raise PickleError(f"pickle ends inside an argument at byte {pos}")
                push(data[pos + 4:end].decode("utf-8", "surrogatepass"))
                pos = end
            elif op == 0x53:  # STRING: Python 2's str in protocol 0, a quoted repr, read as latin-1
                end = data.find(b"\n", pos)
                if end < pos + 2 or data[pos] != data[end - 1] or data[pos] not in (0x27, 0x22):
                    raise PickleError(f"STRING argument at byte {pos} is not a quoted line")
                raw = data[pos + 1:end - 1]
                push((codecs.escape_decode(raw)[0] if 0x5C in raw else raw).decode("latin-1"))
                pos = end + 1
            elif op == 0x49:  # INT (Python 2 writes booleans as I01 and I00)
                end = data.find(b"\n", pos, pos + _MAX_LINE + 1)
                if end < 0:
                    self.pos = pos
                    self.line()  # raises the right error
                text = data[pos:end]
                pos = end + 1
                push(True if text == b"01" else False if text == b"00" else _text_int(self, text))
            elif op == 0x5D:  # EMPTY_LIST
                target = []
                heights[id(target)] = 1
                push(target)
            elif op == 0x65 or op == 0x6C:  # APPENDS, LIST
                if not marks:
                    raise PickleError("pickle closes a mark it never opened")
                start = marks.pop()
                items = stack[start:]
                del stack[start:]
                if op == 0x6C:
                    target = []
                    heights[id(target)] = 1
                    push(target)
                elif not stack:
                    raise PickleError("APPENDS without a list")
                self.fill_list(stack[-1], items)
            elif op == 0x61:  # APPEND
                if len(stack) < 2:
                    raise PickleError("APPEND without a list")
                item = stack.pop()
                target = stack[-1]
                if (target.__class__ is list and item.__class__ in scalars
                        and not (sealed and id(target) in sealed)):
                    target.append(item)
                else:
                    self.fill_list(target, [item])
            elif op == 0x2E:  # STOP
                if len(stack) != 1 or marks:
                    raise PickleError("pickle stops with more than one value left")
                self.pos = pos
                return stack[0]
            else:
                handler = _DISPATCH.get(op)
                if handler is None:
                    raise NotPlainData(f"opcode {_opcode_name(op)} at byte {pos - 1}: plain "
                                       "station data never needs it")
                self.pos = pos
                handler(self, stack, memo)
                pos = self.pos
        raise PickleError("pickle ends without STOP")


def _changed_after_shared(target: Any) -> NotPlainData:
    return NotPlainData(f"{kind(target)} is changed after the memo handed it out again: "
                        "a container inside itself, which station data never is")


def _opcode_name(op: int) -> str:
    info = pickletools.code2op.get(chr(op))
    return info.name if info is not None else f"{bytes([op])!r} (no opcode)"


def _text_int(reader: _Reader, text: bytes) -> int:
    try:
        return _check_int(int(text))
    except ValueError:
        raise PickleError(f"bad number text before byte {reader.pos}") from None


def _op_long(r: _Reader, stack: list, memo: dict) -> None:
    stack.append(_text_int(r, r.line().rstrip(b"L")))


def _op_long1(r: _Reader, stack: list, memo: dict) -> None:
    stack.append(_check_int(int.from_bytes(r.take(r.uint(1)), "little", signed=True)))


def _op_long4(r: _Reader, stack: list, memo: dict) -> None:
    n = r.uint(4)
    if n > MAX_INT_BITS // 8 + 1:
        raise NotPlainData(f"an integer of {n} bytes")
    stack.append(_check_int(int.from_bytes(r.take(n), "little", signed=True)))


def _op_float(r: _Reader, stack: list, memo: dict) -> None:
    try:
        stack.append(float(r.line()))
    except ValueError:
        raise PickleError(f"bad float text before byte {r.pos}") from None


def _op_unicode(r: _Reader, stack: list, memo: dict) -> None:
    stack.append(r.long_line().decode("raw-unicode-escape"))


def _utf8(r: _Reader, raw: bytes) -> str:
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise PickleError(f"text before byte {r.pos} is not UTF-8") from None


def _sized(length_bytes: int, convert):
    def op(r: _Reader, stack: list, memo: dict) -> None:
        stack.append(convert(r, r.take(r.uint(length_bytes))))
    return op


def _latin1(r: _Reader, raw: bytes) -> str:
    return raw.decode("latin-1")


def _raw(r: _Reader, raw: bytes) -> bytes:
    return raw


def _fixed(value: Any):
    def op(r: _Reader, stack: list, memo: dict) -> None:
        stack.append(value)
    return op


def _op_binfloat(r: _Reader, stack: list, memo: dict) -> None:
    stack.append(struct.unpack(">d", r.take(8))[0])


def _op_tuple(r: _Reader, stack: list, memo: dict) -> None:
    stack.append(r.tuple_of(r.pop_mark()))


def _tuple_n(n: int):
    def op(r: _Reader, stack: list, memo: dict) -> None:
        if len(stack) < n:
            raise PickleError(f"TUPLE{n} on a stack of {len(stack)}")
        items = stack[len(stack) - n:]
        del stack[len(stack) - n:]
        stack.append(r.tuple_of(items))
    return op


def _op_global(r: _Reader, stack: list, memo: dict) -> None:
    module = r.line().decode("latin-1")
    name = r.line().decode("latin-1")
    _push_global(stack, module, name)


def _op_stack_global(r: _Reader, stack: list, memo: dict) -> None:
    if len(stack) < 2:
        raise PickleError("STACK_GLOBAL on a short stack")
    name, module = stack.pop(), stack.pop()
    if module.__class__ is not str or name.__class__ is not str:
        raise NotPlainData("STACK_GLOBAL names a global with other than text")
    _push_global(stack, module, name)


def _push_global(stack: list, module: str, name: str) -> None:
    found = GLOBALS.get((module, name))
    if found is None:
        raise NotPlainData(f"pickle names {module[:60]}.{name[:60]}, which is not plain data")
    stack.append(found)


def _op_reduce(r: _Reader, stack: list, memo: dict) -> None:
    if len(stack) < 2:
        raise PickleError("REDUCE on a short stack")
    args = stack.pop()
    stack[-1] = reduce(stack[-1], args)


def _op_build(r: _Reader, stack: list, memo: dict) -> None:
    if len(stack) < 2:
        raise PickleError("BUILD on a short stack")
    state = stack.pop()
    build(stack[-1], state)


def _put(r: _Reader, memo: dict, index: int) -> None:
    memo[index] = r.top()


def _op_long_binput(r: _Reader, stack: list, memo: dict) -> None:
    _put(r, memo, r.uint(4))


def _op_proto(r: _Reader, stack: list, memo: dict) -> None:
    if r.uint(1) > 5:
        raise PickleError("pickle protocol above 5")


def _op_frame(r: _Reader, stack: list, memo: dict) -> None:
    r.take(8)  # a framing hint for streaming readers; the whole pickle is in memory


# The opcodes run() does not take itself: rarer ones, one call each. Everything else
# (sets, bytearrays, POP, DUP, objects, extensions, persistent ids, out-of-band buffers)
# is never in plain station data and is refused by its absence.
_DISPATCH = {
    ord(code): handler for code, handler in {
        "L": _op_long, "\x8a": _op_long1, "\x8b": _op_long4,
        "F": _op_float, "G": _op_binfloat,
        "N": _fixed(None), "\x88": _fixed(True), "\x89": _fixed(False),
        "T": _sized(4, _latin1),
        "V": _op_unicode, "\x8d": _sized(8, _utf8),
        "B": _sized(4, _raw), "C": _sized(1, _raw), "\x8e": _sized(8, _raw),
        ")": _fixed(()), "t": _op_tuple, "\x85": _tuple_n(1), "\x86": _tuple_n(2), "\x87": _tuple_n(3),
        "c": _op_global, "\x93": _op_stack_global, "R": _op_reduce, "b": _op_build,
        "r": _op_long_binput,
        "\x80": _op_proto, "\x95": _op_frame,
    }.items()
}


def load_plain(data: bytes, max_depth: int) -> Any:
    """The plain data ``data`` pickles, with containers nested at most ``max_depth`` deep.

    Raises :class:`NotPlainData` for anything but plain station data and
    :class:`PickleError` for bytes that are not a pickle at all.
    """
    reader = _Reader(bytes(data), max_depth)
    try:
        result = reader.run()
    except (PickleError, RecursionError, MemoryError):
        raise
    except (ValueError, TypeError, OverflowError, IndexError, struct.error, UnicodeError) as exc:
        raise PickleError(f"garbled pickle near byte {reader.pos}: {type(exc).__name__}") from None
    if result.__class__ not in _SCALAR_TYPES and id(result) not in reader.heights:
        raise NotPlainData(f"pickle holds {kind(result)}")
    return result
