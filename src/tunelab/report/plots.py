"""Report plots (matplotlib, PNG bytes): quality vs trainable parameters with the Pareto front,
quality vs the other costs (training time, evaluation speed, peak memory), quality vs K per
strategy, and the spread over seeds. Points are coloured by family (fine-tuning, parameter-efficient,
prompting), the same colour in every plot.

Strategies that train nothing (prompting) have 0 trainable parameters, which a log axis cannot
show: they are drawn at x = 1 and the axis label says so.
"""

from __future__ import annotations

import io
from collections import defaultdict

from tunelab.report.leaderboard import Row, higher_is_better, is_fraction, row_label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, works headless
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def _scale(metric: str) -> float:
    return 100.0 if is_fraction(metric) else 1.0


def _axis_label(metric: str) -> str:
    return f"{metric} (%)" if is_fraction(metric) else metric


def pareto_front(points: list[tuple[float, float]], higher: bool = True) -> list[int]:
    """Indices of the points no other point beats on both axes (fewer params and a better metric),
    ordered by x. Equal x: only the best metric can be on the front."""
    sign = 1 if higher else -1
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front, best = [], None
    for i in order:
        y = sign * points[i][1]
        if best is None or y > best:
            front.append(i)
            best = y
    return front


def plot_pareto(rows: list[Row], metric: str) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    by_k = defaultdict(list)
    for row in rows:
        if row.mean(metric) is not None and row.costs.get("trainable_params") is not None:
            by_k[row.k_shot].append(row)
    scale, zero_drawn, labels = _scale(metric), False, []
    several_k = len(by_k) > 1
    # Fronts in greys: colours belong to families.
    for (k, members), color, marker in zip(sorted(by_k.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)),
                                           ["0.3", "0.55", "0.75"] * 3, "os^Dv<>p"):
        xs = [max(r.costs["trainable_params"], 1.0) for r in members]
        zero_drawn |= any(r.costs["trainable_params"] == 0 for r in members)
        ys = [r.mean(metric) * scale for r in members]
        errs = [r.stats[metric][1] * scale for r in members]
        for x, y, err, row in zip(xs, ys, errs, members):  # colour: family; marker: K
            ax.errorbar([x], [y], yerr=[err], fmt=marker, color=family_color(row.family), capsize=3,
                        label=(row.family or "other") + (f", K={'all' if k is None else k}" if several_k else ""))
        labels += [((x, y), row_label(r)) for x, y, r in zip(xs, ys, members)]
        front = pareto_front(list(zip(xs, ys)), higher_is_better(metric))
        # The front as a staircase carried on to the largest x, its members ringed.
        fx, fy = [xs[i] for i in front] + [max(xs)], [ys[i] for i in front] + [ys[front[-1]]]
        ax.step(fx, fy, where="post", color=color, alpha=0.5, linestyle="--",
                label=f"Pareto front (K={'all' if k is None else k})")
        ax.scatter(fx[:-1], fy[:-1], s=160, facecolors="none", edgecolors=color, linewidths=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale" + ("; 0 drawn at 1" if zero_drawn else "") + ")")
    ax.set_ylabel(_axis_label(metric))
    ax.set_title(f"{metric} vs trainable parameters (mean ± std over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    unique_legend(ax)
    annotate_apart(ax, labels)
    return _png(fig)


FAMILY_COLORS = {"fine-tuning": "tab:blue", "parameter-efficient": "tab:green", "prompting": "tab:orange"}


def family_color(family: str) -> str:
    """One colour per family in every plot; other families (plugins) get a stable colour of their own."""
    extra = ["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:red"]
    return FAMILY_COLORS.get(family) or extra[sum(map(ord, family or "")) % len(extra)]


def unique_legend(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles))  # one entry per family however many points it has
    ax.legend(seen.values(), seen.keys(), fontsize=8, **kwargs)


COST_AXES = (("train_seconds", "training time per cell (s, log scale)", True),
             ("eval_examples_per_second", "evaluation speed (examples/s, log scale)", True),
             ("peak_memory_mb", "peak memory (MB)", False))


def plot_costs(rows: list[Row], metric: str) -> bytes | None:
    """The main metric against training time, evaluation speed and peak memory, one panel each: the
    costs a user pays, which trainable parameters alone hide (a 0-parameter prompt on a large LM is slow
    and big). A zero training time (prompting) is drawn at the axis's left edge, 0.1 s."""
    shown = [r for r in rows if r.mean(metric) is not None]
    if not any(r.costs.get(key) is not None for r in shown for key, _, _ in COST_AXES):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12.0, 3.8), sharey=True)
    scale = _scale(metric)
    from matplotlib.ticker import NullFormatter

    for ax, (key, label, log) in zip(axes, COST_AXES):
        labels = []
        for row in shown:
            x = row.costs.get(key)
            if x is None:
                continue
            x = max(x, 0.1) if log else x
            ax.errorbar([x], [row.mean(metric) * scale], yerr=[row.stats[metric][1] * scale], fmt="o", capsize=3,
                        color=family_color(row.family), label=row.family or "other")
            labels.append(((x, row.mean(metric) * scale), row_label(row)))
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # "2×10¹ 3×10¹ ..." under every minor tick is unreadable
        ax.set_xlabel(label, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        unique_legend(ax, loc="best")
        annotate_apart(ax, labels)
    for ax in axes[:-1]:
        ax.get_legend().remove()  # one legend is enough: the colours are the same in every panel
    axes[0].set_ylabel(_axis_label(metric))
    fig.suptitle(f"{metric} against what each strategy costs (mean ± std over seeds)", fontsize=10)
    return _png(fig)


LABEL_POINTS = 8  # font size of point labels, in points
DEFAULT_OFFSET = (5.0, 4.0)


def annotate_apart(ax, labels: list[tuple[tuple[float, float], str]]) -> None:
    """Label points beside them, moving a label down (then up) while it would cover an earlier one."""
    ax.figure.canvas.draw()  # settles the axis limits, so data → display positions are final
    to_points = 72.0 / ax.figure.dpi
    anchors = [tuple(ax.transData.transform(xy) * to_points) for xy, _ in labels]
    for (xy, text), offset in zip(labels, label_offsets(anchors, [t for _, t in labels])):
        moved = offset != DEFAULT_OFFSET  # a thin leader line ties a moved label to its point
        leader = {"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 3} if moved else None
        ax.annotate(text, xy, textcoords="offset points", xytext=offset, fontsize=LABEL_POINTS, arrowprops=leader)


def label_offsets(anchors: list[tuple[float, float]], texts: list[str]) -> list[tuple[float, float]]:
    """Offsets (points) for labels whose anchors are in points: right of and above the point unless that
    box overlaps a placed one; then one line lower, higher, two lower, ... (at most 6 tries)."""
    height = LABEL_POINTS * 1.25
    placed, offsets = [], []
    for (px, py), text in zip(anchors, texts):
        width = 0.6 * LABEL_POINTS * len(text)
        for step in (0, -1, 1, -2, 2, -3, 3):
            dx, dy = DEFAULT_OFFSET[0], DEFAULT_OFFSET[1] + step * height
            box = (px + dx, py + dy, px + dx + width, py + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        offsets.append((dx, dy))
    return offsets


def plot_metric_vs_k(rows: list[Row], metric: str) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    series = defaultdict(list)
    for row in rows:
        if row.mean(metric) is not None:
            series[row_label(row)].append(row)
    ks = sorted({r.k_shot for r in rows if r.k_shot is not None})
    position = {k: i for i, k in enumerate(ks)}
    position[None] = len(ks)
    scale = _scale(metric)
    for (label, members), color in zip(series.items(), _colors()):
        members.sort(key=lambda r: position[r.k_shot])
        ax.errorbar([position[r.k_shot] for r in members], [r.mean(metric) * scale for r in members],
                    yerr=[r.stats[metric][1] * scale for r in members], marker="o", capsize=3, label=label, color=color)
    ticks = ks + ([None] if any(r.k_shot is None for r in rows) else [])
    ax.set_xticks([position[k] for k in ticks], ["all" if k is None else str(k) for k in ticks])
    ax.set_xlabel("K (training examples per class)")
    ax.set_ylabel(_axis_label(metric))
    ax.set_title(f"{metric} vs K (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _png(fig)


def plot_seed_spread(rows: list[Row], metric: str) -> bytes:
    plt = _pyplot()
    shown = [r for r in rows if r.values.get(metric)]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(shown) + 1.4))
    scale = _scale(metric)
    for y, row in enumerate(shown):
        values = [v * scale for v in row.values[metric]]
        color = family_color(row.family)
        ax.scatter(values, [y] * len(values), color=color, alpha=0.7, zorder=3)
        ax.plot([min(values), max(values)], [y, y], color=color, alpha=0.4)
        ax.scatter([row.mean(metric) * scale], [y], marker="|", s=300, color="black", zorder=4)
    ax.set_yticks(range(len(shown)), [f"{row_label(r)} (K={'all' if r.k_shot is None else r.k_shot})" for r in shown])
    ax.invert_yaxis()
    ax.set_xlabel(_axis_label(metric) + " per seed (| = mean)")
    ax.set_title(f"spread of {metric} over seeds")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def _colors():
    import itertools

    return itertools.cycle(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                            "tab:pink", "tab:gray", "tab:olive", "tab:cyan"])


def all_plots(rows: list[Row], metric: str) -> dict[str, bytes]:
    """file name → PNG bytes; empty when nothing finished."""
    if not any(r.mean(metric) is not None for r in rows):
        return {}
    plots = {"pareto.png": plot_pareto(rows, metric)}
    costs = plot_costs(rows, metric)
    if costs is not None:
        plots["costs.png"] = costs
    if len({r.k_shot for r in rows}) > 1:  # with one K the curve is a single column of dots
        plots["metric_vs_k.png"] = plot_metric_vs_k(rows, metric)
    plots["seed_spread.png"] = plot_seed_spread(rows, metric)
    return plots


PLOT_FILES = ("pareto.png", "costs.png", "metric_vs_k.png", "seed_spread.png")


def plot_accuracy_matrix(tasks: list[str], matrix: list[list[float]], metric: str, title: str) -> bytes:
    """Continual learning's matrix as a heatmap: row j = after training task j (row 0: untrained),
    column i = the metric on task i; the cells print their values (×100 for fractions)."""
    plt = _pyplot()
    scale = _scale(metric)
    rows = ["(untrained)"] + [f"after {t}" for t in tasks]
    fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 2.2, 0.55 * len(rows) + 1.3))
    values = [[v * scale for v in row] for row in matrix]
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=scale, aspect="auto")
    for j, row in enumerate(values):
        for i, value in enumerate(row):
            ax.text(i, j, f"{value:.1f}", ha="center", va="center", color="white" if value < 0.6 * scale else "black")
    ax.set_xticks(range(len(tasks)), [f"on {t}" for t in tasks])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=_axis_label(metric))
    return _png(fig)
