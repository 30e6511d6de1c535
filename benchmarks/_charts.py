"""PNG charts of a benchmark run (matplotlib, the ``bench`` extra).

Charts a reader takes in at a glance: the latency ratio to the floor per
store group and contestant (shoal's bars in one colour, the peers' in
another, the floor's line at 1.0), the lost updates per contestant, and the
throughput under gunicorn as a share of the bare app's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._latency import Result
from benchmarks._lost import LostResult

__all__ = ["draw"]

SHOAL, PEER, FLOOR = "#1f77b4", "#bbbbbb", "#2ca02c"


def _colour(name: str) -> str:
    return (FLOOR if name.startswith(("floor", "bare")) else
            SHOAL if name.startswith("shoal") else PEER)  # fmt: skip


def draw(
    latency: list[Result], lost: list[LostResult], out: Path,
    served: list[dict[str, Any]] | None = None,
) -> list[Path]:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    groups = list(dict.fromkeys(r.group for r in latency))
    if groups:
        heights = [len([r for r in latency if r.group == g]) for g in groups]
        fig, axes = plt.subplots(len(groups), 1, figsize=(9, 0.38 * sum(heights) + 1.2 * len(groups)),
                                 gridspec_kw={"height_ratios": heights}, squeeze=False)  # fmt: skip
        for ax, group in zip(axes[:, 0], groups):
            rows = [r for r in latency if r.group == group]
            names = [r.variant for r in rows]
            colours = [_colour(r.variant) for r in rows]
            ax.barh(names, [r.ratio for r in rows], color=colours)
            ax.axvline(1.0, color="black", linewidth=0.8)
            for y, r in enumerate(rows):
                ax.text(r.ratio, y, f" {r.ratio:.2f}x ({r.median_us:.0f} us)", va="center",
                        fontsize=8)  # fmt: skip
            ax.invert_yaxis()
            ax.set_title(f"{group}: median latency per request / the floor (lower is better)",
                         fontsize=10, loc="left")  # fmt: skip
            ax.tick_params(axis="y", labelsize=8)
            top = max(r.ratio for r in rows)
            if top > 20:  # peers 100x slower would flatten shoal's bars: a log axis
                ax.set_xscale("log")
                ax.set_xlim(min(r.ratio for r in rows) * 0.5, top * 6)
            else:
                ax.set_xlim(0, top * 1.35)
        fig.tight_layout()
        path = out / "benchmarks-latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if lost:
        fig, ax = plt.subplots(figsize=(9, 0.32 * len(lost) + 1.5))
        names = [f"{r.store}: {r.contestant}" for r in lost]
        keys = [max(0, r.lost_keys) / r.writes * 100 for r in lost]
        incs = [max(0, r.lost_increments) / r.writes * 100 for r in lost]
        ys = range(len(lost))
        ax.barh([y - 0.2 for y in ys], keys, height=0.4, label="own keys lost %", color="#d62728")
        ax.barh([y + 0.2 for y in ys], incs, height=0.4, label="counter increments lost %",
                color="#ff9896")  # fmt: skip
        ax.set_yticks(list(ys), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_title("8 concurrent clients on one session: updates lost (lower is better)",
                     fontsize=10, loc="left")  # fmt: skip
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = out / "benchmarks-lost-updates.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if served:
        fig, ax = plt.subplots(figsize=(9, 0.32 * len(served) + 1.5))
        names = [row["contestant"] for row in served]
        ax.barh(names, [row["ratio"] for row in served], color=[_colour(n) for n in names])
        for y, row in enumerate(served):
            ax.text(row["ratio"], y, f" {row['ratio']:.2f}x ({row['rps']:.0f} req/s)",
                    va="center", fontsize=8)  # fmt: skip
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.45)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_title("gunicorn, 4 sync workers: requests/s / the bare app's (higher is better)",
                     fontsize=10, loc="left")  # fmt: skip
        fig.tight_layout()
        path = out / "benchmarks-throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
