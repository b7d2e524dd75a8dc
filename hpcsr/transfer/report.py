"""The transfer report: what happened to every tensor of the target model (copied, adapted and how,
re-initialised and why) and to every source tensor the target does not have (dropped), with the
share of the target's parameters that had to be re-initialised.

Printed as a table and saved as JSON next to the seed (`<seed>.report.json`), also when the
transfer is refused, so the full list of mismatches is never lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

COPIED, ADAPTED, REINITIALISED, DROPPED = "copied", "adapted", "re-initialised", "dropped"
ACTIONS = (COPIED, ADAPTED, REINITIALISED, DROPPED)


@dataclass(frozen=True)
class TensorAction:
    """One tensor: its name, shapes on both sides (None where absent), what was done and why."""

    name: str
    action: str  # one of ACTIONS
    how: str  # e.g. 'copied (shape-independent of L/t)', 'rebuilt from the target recipe ...'
    source_shape: tuple | None
    target_shape: tuple | None
    numel: int  # elements of the target tensor (of the source one when dropped)
    parameter: bool = True  # False for buffers (e.g. the noise schedule), which never count as re-initialised
    mismatch: bool = False  # True when the action is caused by a shape difference or a missing tensor


@dataclass
class TransferReport:
    strategy: str
    source: dict  # path, kind, pair, stage, step
    target: dict  # pair, recipe, model
    max_reinit: float  # largest allowed share of target parameters re-initialised by a mismatch
    entries: list = field(default_factory=list)  # TensorAction
    notes: list = field(default_factory=list)  # free-text facts about the transfer
    status: str = "ok"  # 'ok', 'forced' (over the threshold, accepted with --force) or 'refused'
    error: str | None = None

    def add(self, entry: TensorAction) -> None:
        self.entries.append(entry)

    def of(self, action: str) -> list:
        return [e for e in self.entries if e.action == action]

    @property
    def target_params(self) -> int:
        return sum(e.numel for e in self.entries if e.parameter and e.action != DROPPED)

    @property
    def mismatched(self) -> list:
        """Entries that exist because the two models differ (shape, or a tensor on one side only)."""
        return [e for e in self.entries if e.mismatch]

    @property
    def reinit_fraction(self) -> float:
        """Share of the target's parameter elements re-initialised because they did not fit."""
        total = self.target_params
        bad = sum(e.numel for e in self.entries if e.parameter and e.action == REINITIALISED and e.mismatch)
        return bad / total if total else 0.0

    def summary(self) -> dict:
        out = {}
        for action in ACTIONS:
            group = self.of(action)
            out[action] = {"tensors": len(group), "elements": sum(e.numel for e in group)}
        out["target_parameters"] = self.target_params
        out["reinit_fraction"] = self.reinit_fraction
        out["max_reinit"] = self.max_reinit
        return out

    def to_dict(self) -> dict:
        entries = []
        for e in self.entries:
            d = asdict(e)
            d["source_shape"] = list(e.source_shape) if e.source_shape is not None else None
            d["target_shape"] = list(e.target_shape) if e.target_shape is not None else None
            entries.append(d)
        return {
            "format": "hpcsr-transfer-report",
            "strategy": self.strategy,
            "status": self.status,
            "error": self.error,
            "source": self.source,
            "target": self.target,
            "summary": self.summary(),
            "notes": list(self.notes),
            "tensors": entries,
        }

    def format(self, tensors: bool = True) -> str:
        """A readable table: header, every tensor (unless tensors=False), then the totals."""
        src, tgt = self.source, self.target
        lines = [
            f"transfer ({self.strategy}): {src.get('pair') or '?'} {src.get('kind')} {src.get('path')}",
            f"  -> {tgt['pair']} (L={tgt['recipe']['context']}, beta_end={tgt['recipe']['beta_end']}, "
            f"f={tgt['recipe']['mass_label']})",
        ]
        if tensors:
            width = max((len(e.name) for e in self.entries), default=10)
            for action in ACTIONS:
                for e in self.of(action):
                    lines.append(
                        f"  {action:<14} {e.name:<{width}}  {_shape(e.target_shape if e.target_shape else e.source_shape):<18} {e.how}"
                    )
        s = self.summary()
        counts = ", ".join(f"{s[a]['tensors']} {a}" for a in ACTIONS)
        lines.append(
            f"  total: {counts}; re-initialised by mismatch {100 * self.reinit_fraction:.2f} % of "
            f"{self.target_params} target parameters (limit {100 * self.max_reinit:g} %)"
        )
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  status: {self.status}" + (f": {self.error}" if self.error else ""))
        return "\n".join(lines)


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")" if shape is not None else "-"
