"""The speedup bar chart shared by `paddle-fastconv bench --png` and
benchmarks/report.py --png. Plain matplotlib: no Paddle import, so the report
script can load this file on its own."""


def speedup_chart(labels, values, path, title="", colors=None):
    """Horizontal bars of fused-over-stock speedups, a line at 1x, to PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(values) + 1.2))
    ax.barh(range(len(values)), values, color=colors or "tab:blue")
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("speedup over stock Paddle (higher is better)")
    for i, v in enumerate(values):
        ax.text(v, i, " %.2fx" % v, va="center", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
