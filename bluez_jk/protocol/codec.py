"""Each frame struct compiled once, with the per-field conversions of scale.py attached."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from construct import Struct

from bluez_jk.protocol.frames import STRUCTS, Field, Kind, fields
from bluez_jk.protocol.scale import NUM, SCALE, UNPUBLISHED, Convert, decoder, encoder
from bluez_jk.protocol.variants import ProtocolName


@dataclass(frozen=True)
class Codec:
    compiled: Any  # construct's Compiled; compiling keeps scaling out of the struct (speed)
    fields: tuple[Field, ...]
    decoders: tuple[tuple[str, Convert | None], ...]
    encoders: tuple[tuple[str, Convert], ...]


def codec_for(kind: Kind, protocol: ProtocolName) -> Codec:
    return _compile(STRUCTS[kind, protocol])


@cache
def _compile(frame: Struct) -> Codec:
    named = tuple(fields(frame))
    published = tuple(f for f in named if f.name not in UNPUBLISHED)
    return Codec(
        compiled=frame.compile(),
        fields=named,
        decoders=tuple((f.name, decoder(f, SCALE[f.name])) for f in published),
        encoders=tuple((f.name, encoder(f, SCALE.get(f.name, NUM))) for f in named),
    )
