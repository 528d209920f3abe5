"""Human-readable summary of a compiled program's plan (what `microt-deploy compile` prints)."""

from __future__ import annotations


def summarize(plan: dict) -> str:
    """A plain-text table: per layer op, output shape, MACs, flash bytes, arena offset; then totals."""
    lines = []
    for g in plan["graphs"]:
        lines.append(f"graph {g['index']} '{g['prefix']}': {len(g['layers'])} layers, "
                     f"{g['macs']:,} MACs, {g['const_bytes']:,} const bytes")
        lines.append(f"  {'#':>3}  {'op':<18} {'output shape':<18} {'MACs':>12} {'weights B':>10} "
                     f"{'offset':>8} {'size':>8}")
        for la in g["layers"]:
            shape = "x".join(str(d) for d in la["output_shape"])
            pruned = "" if la["live_macs"] == la["macs"] else f"  ({la['live_macs']:,} MACs run: zero filter rows)"
            lines.append(f"  {la['index']:>3}  {la['op']:<18} {shape:<18} {la['macs']:>12,} "
                         f"{la['weight_bytes']:>10,} {la['output_offset']:>8} {la['output_size']:>8}{pruned}")
    lines.append(f"arena (peak activation SRAM): {plan['arena_bytes']:,} bytes "
                 f"(MDT_ARENA_SIZE {plan['arena_size']:,}); const (flash): {plan['const_bytes']:,} bytes; "
                 f"MACs: {plan['macs']:,}"
                 + ("" if plan["live_macs"] == plan["macs"] else f" ({plan['live_macs']:,} run; the rest multiply "
                                                                 "all-zero filter rows and are skipped)"))
    return "\n".join(lines)
