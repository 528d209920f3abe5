"""Static arena plan: liveness of every activation buffer over the whole program (all graphs in
order on one arena), then greedy placement by size at aligned offsets. The peak is exact."""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 16


@dataclass
class Buffer:
    """One region of the arena shared by aliased tensors (RESHAPE, bound graph inputs)."""

    id: int
    size: int
    first: int  # program step of the first write
    last: int  # program step of the last read (inclusive)
    tensors: list[str] = field(default_factory=list)  # "prefix:tensor_name"
    offset: int = -1

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


def align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


def place(buffers: list[Buffer]) -> int:
    """Give every buffer an offset; return the arena size (end of the highest buffer)."""
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first, b.id)):
        busy = sorted((p.offset, p.offset + p.size) for p in placed if p.overlaps_in_time(buf))
        offset = 0
        for start, end in busy:
            if offset + buf.size <= start:
                break
            offset = max(offset, align(end))
        buf.offset = offset
        placed.append(buf)
    return max((b.offset + b.size for b in buffers), default=0)
