"""Each frame struct compiled once, with the per-field conversions of scale.py attached."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from typing import Any

from construct import Struct

from bluez_jk.protocol.frames import STRUCTS, Field, Kind, fields
from bluez_jk.protocol.packed import FlatStruct
from bluez_jk.protocol.scale import NUM, SCALE, UNPUBLISHED, Convert, decoder, encoder
from bluez_jk.protocol.variants import ProtocolName


@dataclass(frozen=True)
class Codec:
    compiled: Any  # construct's Compiled; compiling keeps scaling out of the struct (speed)
    parse: Callable[[bytes], Mapping[str, Any]]
    fields: tuple[Field, ...]
    decoders: tuple[tuple[str, Convert | None], ...]
    encoders: tuple[tuple[str, Convert], ...]


def codec_for(kind: Kind, protocol: ProtocolName) -> Codec:
    return _compile(STRUCTS[kind, protocol])


@cache
def _compile(frame: Struct) -> Codec:
    named = tuple(fields(frame))
    published = tuple(f for f in named if f.name not in UNPUBLISHED)
    compiled = frame.compile()
    return Codec(
        compiled=compiled,
        parse=_direct(compiled) if isinstance(frame, FlatStruct) and frame.flat else compiled.parse,
        fields=named,
        decoders=tuple((f.name, decoder(f, SCALE[f.name])) for f in published),
        encoders=tuple((f.name, encoder(f, SCALE.get(f.name, NUM))) for f in named),
    )


def _direct(compiled: Any) -> Callable[[bytes], Mapping[str, Any]]:
    """Call the generated parser without construct's per-call context set-up, which cost
    more than the parsing itself. A FlatStruct's parser never reads that context."""
    parsefunc = compiled.parsefunc

    def parse(data: bytes) -> Mapping[str, Any]:
        return parsefunc(BytesIO(data), None)  # type: ignore[no-any-return]

    return parse
