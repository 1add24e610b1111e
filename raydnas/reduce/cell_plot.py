"""A genotype drawn as a cell diagram (``cell_<NN>.png``: nodes, and one arrow per chosen op)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

# Lazy imports: matplotlib loads only when a figure is drawn.


def pyplot():
    """pyplot on the Agg backend (matplotlib is imported only when a report draws)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _node_positions(inputs: int, nodes: int) -> dict[int, tuple[float, float]]:
    pos = {}
    for i in range(inputs):
        pos[i] = (0.0, 1.2 - 2.4 * i / (inputs - 1)) if inputs > 1 else (0.0, 0.0)
    for j in range(nodes):
        pos[inputs + j] = (2.2 + 2.0 * j, 0.0)
    pos[-1] = (2.2 + 2.0 * nodes, 0.0)  # cell output
    return pos


def _node_name(k: int, inputs: int) -> str:
    if k == -1:
        return "out"
    if inputs == 2 and k < 2:
        return ("$c_{k-2}$", "$c_{k-1}$")[k]
    return str(k)


def _bend(pos: dict, src: int, dst: int, n_edge: int) -> float:
    """0 (straight) unless another node lies near the chord; then bend, alternating sides."""
    (x0, y0), (x1, y1) = pos[src], pos[dst]
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    for k, (x, y) in pos.items():
        if k in (src, dst):
            continue
        t = ((x - x0) * dx + (y - y0) * dy) / length2
        if 0.0 < t < 1.0 and math.hypot(x0 + t * dx - x, y0 + t * dy - y) < 0.45:
            span = max(1, round(math.sqrt(length2) / 2.0))
            return (0.22 + 0.08 * span) * (1 if (src + n_edge) % 2 else -1)
    return 0.0


#: an op on no path from an input to the output (its input is cut off, or its node unused)
DEAD_COLOR = "#9e9e9e"
OP_COLORS = {"none": "#bbbbbb", "skip_connect": "#d62728", "max_pool_3x3": "#ff7f0e",
             "avg_pool_3x3": "#e377c2"}


def cell_diagram(genotype, title: str, path: Path) -> None:
    """Nodes left to right, one labelled arrow per chosen (input, op); param-free ops in warm
    colours, ops with weights in blue; dotted arrows into the output for concatenated nodes."""
    plt = pyplot()
    from matplotlib.patches import FancyArrowPatch

    cts = list(genotype.cells)
    nodes = len(genotype.cells[cts[0]])
    width = max(7.0, 2.5 + 2.0 * nodes)
    fig, axes = plt.subplots(len(cts), 1, figsize=(width, 0.62 * width * len(cts)),
                             dpi=110, squeeze=False)
    for ax, ct in zip(axes[:, 0], cts):
        pos = _node_positions(genotype.inputs, nodes)
        bulge, bent = 0.0, 0
        curve_y: list[float] = []
        for k, (x, y) in pos.items():
            is_in = 0 <= k < genotype.inputs
            face = "#c6dbef" if is_in else ("#fdd49e" if k == -1 else "#e5f5e0")
            ax.text(x, y, _node_name(k, genotype.inputs), ha="center", va="center", fontsize=9,
                    bbox=dict(boxstyle="round,pad=0.35", fc=face, ec="black"), zorder=3)
        live = genotype.live_edges(ct)
        for j, node in enumerate(genotype.cells[ct]):
            dst = genotype.inputs + j
            for n_edge, (op, src) in enumerate(node):
                if op == "none":
                    continue
                dead = (dst, src) not in live
                (x0, y0), (x1, y1) = pos[src], pos[dst]
                rad = _bend(pos, src, dst, 0)
                if rad:  # alternate sides so arcs spread above and below the row of nodes
                    rad = abs(rad) * (1 if bent % 2 else -1)
                    bent += 1
                    bulge = max(bulge, abs(rad) * math.dist(pos[src], pos[dst]) / 2)
                color = DEAD_COLOR if dead else OP_COLORS.get(op, "#1f77b4")
                ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), connectionstyle=f"arc3,rad={rad}",
                                             arrowstyle="-|>", mutation_scale=12, color=color,
                                             lw=1.0 if dead else 1.6, ls="--" if dead else "-",
                                             shrinkA=14, shrinkB=14, zorder=1))
                # arc3 is a quadratic Bezier with its control point off the chord's middle;
                # labels sit near the arrow's head (t = 0.7): edges leaving one input for
                # different nodes then never share a spot, and edges into one node arrive
                # from different sides
                dx, dy = x1 - x0, y1 - y0
                cx, cy = (x0 + x1) / 2 + rad * dy, (y0 + y1) / 2 - rad * dx
                curve_y += [(1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t ** 2 * y1
                            for t in (0.25, 0.5, 0.75)]
                t = 0.7
                mx = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t ** 2 * x1
                my = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t ** 2 * y1
                ax.text(mx, my, op, fontsize=7.5, ha="center",
                        va="center", color=color,
                        bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=color, lw=0.6,
                                  alpha=0.9),
                        zorder=2)
        for k in genotype.concat:
            (x0, y0), (x1, y1) = pos[k], pos[-1]
            rad = abs(_bend(pos, k, -1, 0))  # around the nodes in between, on one side
            bulge = max(bulge, rad * math.dist(pos[k], pos[-1]) / 2)
            ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10,
                                         connectionstyle=f"arc3,rad={rad}", color="grey", lw=1,
                                         ls=":", shrinkA=14, shrinkB=14))
            cy = (y0 + y1) / 2 - rad * (x1 - x0)
            curve_y.append(0.5 * (y0 + y1) / 2 + 0.5 * cy)
        xs = [p[0] for p in pos.values()]
        ys = [p[1] for p in pos.values()] + curve_y  # every arc inside the panel
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
        ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
        ax.set_aspect("equal")  # arc3 bends in display space: equal scales keep arcs inside
        ax.set_title(f"{ct} cell", fontsize=10)
        ax.axis("off")
    fig.suptitle(textwrap.fill(title, 80), fontsize=9)
    fig.text(0.5, 0.01, "blue: ops with weights; red/orange/pink: parameter-free (skip, pools); "
             "dotted: concatenated into the cell output;\ngrey dashed: unused (no path from an "
             "input through the op to the output)", ha="center", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)


