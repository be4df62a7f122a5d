"""The report's figures: matplotlib (Agg) figures -> base64 PNG data URIs.

Every function takes plain data (dicts, NumPy arrays) and returns a
`data:image/png;base64,...` string, so the page needs no file beside it and
no network, and the plots can be tested without a model.
"""

from __future__ import annotations

import base64
import io

import numpy as np

# Interest colours: the same cluster has the same colour in the Figure-5
# scatter, the case-study tables and the topic heatmap.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#ad494a")
UNROUTED = "#c7c7c7"


def colour(k: int) -> str:
    return PALETTE[k % len(PALETTE)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; before pyplot is imported
    import matplotlib.pyplot as plt

    return plt


def to_data_uri(fig) -> str:
    """Renders `fig` as PNG and closes it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def training_curves(histories: dict[str, dict[str, list[float]]]) -> str:
    """Per-epoch training history of each model (`training.json` "history").

    Args:
      histories: model name -> metric -> per-epoch values.

    Returns: one panel per metric (loss, validation HR, routing diagnostics),
    a line per model that logged it.
    """
    plt = _pyplot()
    # total_loss repeats loss when there is no regularisation: one panel then.
    hidden = {"regularization_loss"} | ({"total_loss"} if all(h.get("total_loss") == h.get("loss")
                                                               for h in histories.values()) else set())
    metrics = sorted({m for h in histories.values() for m in h if m not in hidden},
                     key=lambda m: (not m.endswith("loss"), not m.startswith("val_"), m))
    cols = min(3, max(1, len(metrics)))
    rows = max(1, -(-len(metrics) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for j, (name, history) in enumerate(histories.items()):
            values = history.get(metric)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, marker="o", color=colour(j), label=name)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        longest = max(len(h.get(metric) or []) for h in histories.values())
        ax.set_xticks(range(1, longest + 1) if longest <= 12 else ax.get_xticks())
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    return to_data_uri(fig)


def hit_rates(rows: dict[str, dict[str, dict]]) -> str:
    """HR@K with 95% bootstrap intervals, grouped by K.

    Args:
      rows: label (e.g. "dcm HR", "dcm served HR") -> K (str) ->
        `{"mean": float, "ci95": [lo, hi]}` (`mer evaluate`'s JSON blocks).
    """
    plt = _pyplot()
    ks = sorted({k for block in rows.values() for k in block}, key=int)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(ks) * max(1, len(rows)) / 2), 3.6))
    width = 0.8 / max(1, len(rows))
    for j, (label, block) in enumerate(rows.items()):
        xs = [i + (j - (len(rows) - 1) / 2) * width for i, k in enumerate(ks) if k in block]
        mean = np.array([block[k]["mean"] for k in ks if k in block])
        lo = np.array([block[k]["ci95"][0] for k in ks if k in block])
        hi = np.array([block[k]["ci95"][1] for k in ks if k in block])
        ax.bar(xs, mean, width * 0.92, color=colour(j), label=label,
               yerr=np.vstack([mean - lo, hi - mean]), capsize=3, ecolor="#333333")
    ax.set_xticks(range(len(ks)), [f"HR@{k}" for k in ks])
    ax.set_ylabel("hit rate (95% bootstrap CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return to_data_uri(fig)


def clusters_2d(panels: list[dict]) -> str:
    """Figure 5: one user's history in 2-D, coloured by interest, with the
    centroids; one panel per model (DCM, and MIND when the run has one).

    Args:
      panels: dicts with `title`, `points [L, 2]`, `assign [L]` (cluster,
        -1 = not routed: padding-free but invalid or negative), `centroids
        [K, 2]`, `active [K]` bool (clusters the model kept).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        points, assign = panel["points"], panel["assign"]
        unrouted = assign < 0
        if unrouted.any():
            ax.scatter(points[unrouted, 0], points[unrouted, 1], s=28, c=UNROUTED, marker="x",
                       label="not routed (invalid / negative)")
        empty = []
        for k in np.flatnonzero(panel["active"]):
            members = assign == k
            if not members.any():  # a kept interest no item was routed to: no centroid to place
                empty.append(str(k))
                continue
            ax.scatter(points[members, 0], points[members, 1], s=34, color=colour(k), alpha=0.85,
                       edgecolors="white", linewidths=0.5)
            ax.scatter(*panel["centroids"][k], s=260, marker="*", color=colour(k), edgecolors="black",
                       linewidths=0.9, label=f"interest {k} ({members.sum()} items)")
        if empty:
            ax.scatter([], [], s=0, label=f"no items: interest {', '.join(empty)}")
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.8)
    fig.tight_layout()
    return to_data_uri(fig)


def topic_heatmap(rows: list[tuple[str, dict[str, float]]], topics: list[str]) -> str:
    """Figure 6 as a matrix: per row (the history, each interest's items,
    each user embedding's top items) the share of items carrying each topic.

    Args:
      rows: (label, topic -> share) in display order.
      topics: the columns.
    """
    plt = _pyplot()
    matrix = np.array([[shares.get(t, 0.0) for t in topics] for _, shares in rows])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(topics) + 3), 0.36 * len(rows) + 1.6))
    image = ax.imshow(matrix, aspect="auto", cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(topics)), topics, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.03, label="share of items with the topic")
    fig.tight_layout()
    return to_data_uri(fig)
