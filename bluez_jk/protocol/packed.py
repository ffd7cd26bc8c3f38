"""Two construct classes whose compiled parsers are single `struct` calls.

construct compiles a Struct into one read, one unpack and two dict stores per field, and an
Array into one unpack per element; for a 300-byte frame of 40-odd fields that was three times
slower than a hand-written `struct` decoder. These classes keep construct's declarations (and
its plain, uncompiled behaviour) and only change what `.compile()` emits.
"""

from __future__ import annotations

import struct
from typing import Any

from construct import (
    Bytes,
    Const,
    Construct,
    FormatField,
    Padded,
    Pass,
    Renamed,
    Struct,
    stream_read,
    stream_write,
)


class PackedArray(Construct):  # type: ignore[misc]
    """`count` little-endian numbers of one struct format character, read in one call."""

    def __init__(self, count: int, fmt: str) -> None:
        super().__init__()
        self.count = count
        self.fmt = fmt
        self.packer = struct.Struct(f"<{count}{fmt}")

    def _parse(self, stream: Any, context: Any, path: str) -> list[Any]:
        return list(self.packer.unpack(stream_read(stream, self.packer.size, path)))

    def _build(self, obj: Any, stream: Any, context: Any, path: str) -> Any:
        stream_write(stream, self.packer.pack(*obj), self.packer.size, path)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        return self.packer.size

    def _emitparse(self, code: Any) -> str:
        name = f"packedarray_{code.allocateId()}"
        code.append(f"{name} = struct.Struct({self.packer.format!r})")
        return f"list({name}.unpack(io.read({self.packer.size})))"

    def _emitbuild(self, code: Any) -> str:
        name = f"packedarray_{code.allocateId()}"
        code.append(f"{name} = struct.Struct({self.packer.format!r})")
        return f"(io.write({name}.pack(*obj)), obj)[1]"


class FlatStruct(Struct):  # type: ignore[misc]
    """A Struct that compiles to one `struct.unpack` and a dict literal when all its fields
    are fixed-size primitives (numbers, bytes, padding, constants, packed arrays); otherwise
    it compiles like any Struct. Compiled parsing returns a plain dict, not a Container."""

    @property
    def flat(self) -> bool:
        """Whether the compiled parser is the single-unpack one (which needs no context)."""
        return _plan(self.subcons) is not None

    def _emitparse(self, code: Any) -> str:
        plan = _plan(self.subcons)
        if plan is None:
            return str(super()._emitparse(code))
        fmt, items, consts = plan
        ident = code.allocateId()
        packer = f"flatstruct_packer_{ident}"
        code.append(f"{packer} = struct.Struct({fmt!r})")
        checks = "".join(f"    if v[{i}] != {value!r}: raise ConstError\n" for i, value in consts)
        fields = ", ".join(items)
        code.append(
            f"def parse_flatstruct_{ident}(io, this):\n"
            f"    v = {packer}.unpack(io.read({struct.calcsize(fmt)}))\n"
            f"{checks}"
            f"    return {{{fields}}}\n"
        )
        return f"parse_flatstruct_{ident}(io, this)"


def _plan(subcons: list[Any]) -> tuple[str, list[str], list[tuple[int, bytes]]] | None:
    """One struct format for all fields, the dict items that pick them out of the unpacked
    tuple, and the constants to check; None when a field is not a fixed-size primitive."""
    fmt = "<"
    items: list[str] = []
    consts: list[tuple[int, bytes]] = []
    index = 0
    for sub in subcons:
        name = sub.name if isinstance(sub, Renamed) else None
        con = sub.subcon if isinstance(sub, Renamed) else sub
        if isinstance(con, Padded) and con.subcon is Pass:
            fmt += f"{con.length}x"
            continue
        if isinstance(con, PackedArray):
            fmt += f"{con.count}{con.fmt}"
            pick = f"list(v[{index}:{index + con.count}])"
            width = con.count
        elif isinstance(con, FormatField) and con.fmtstr[0] == "<":
            fmt += con.fmtstr[1:]
            pick, width = f"v[{index}]", 1
        elif isinstance(con, Const) and isinstance(con.value, bytes):
            fmt += f"{len(con.value)}s"
            consts.append((index, con.value))
            pick, width = f"v[{index}]", 1
        elif type(con) is type(Bytes(1)) and isinstance(con.length, int):
            fmt += f"{con.length}s"
            pick, width = f"v[{index}]", 1
        else:
            return None
        if name is not None:
            items.append(f"{name!r}: {pick}")
        index += width
    return fmt, items, consts
