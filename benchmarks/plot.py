"""``--plot``: the timing figures as a PNG, one panel per case (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

from .report import Results

__all__ = ["plot"]


def plot(results: Results, path: Path) -> None:
    """Write horizontal bars of each peer's median, with the interquartile range."""
    import matplotlib  # noqa: PLC0415 - an optional, benchmark-only dependency

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    groups: dict[str, list[tuple[str, tuple[float, float, float]]]] = {}
    for row in results.rows:
        if not row.skipped:
            q1, q2, q3 = (q * 1e9 for q in row.quartiles())
            groups.setdefault(row.group, []).append((row.peer, (q1, q2, q3)))
    figure, axes = pyplot.subplots(
        len(groups), 1, figsize=(8, 1.0 + 0.32 * len(results.rows) + 0.5 * len(groups))
    )
    for ax, (group, bars) in zip(figure.axes, groups.items()):
        peers = [peer for peer, _ in bars]
        medians = [q2 for _, (_, q2, _) in bars]
        spread = [
            [q2 - q1 for _, (q1, q2, _) in bars],
            [q3 - q2 for _, (_, q2, q3) in bars],
        ]
        colours = ["tab:orange" if peer == "xlocal" else "tab:blue" for peer in peers]
        ax.barh(peers, medians, xerr=spread, color=colours, capsize=2)
        ax.invert_yaxis()
        ax.set_xlim(left=0)
        ax.set_title(group, fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
    axes[-1].set_xlabel("ns per operation (median, interquartile range)")
    machine = results.machine
    figure.suptitle(
        f"xlocal and peers, {results.mode} run: {machine['python']}, {machine['cpu']}",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
