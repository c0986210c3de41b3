"""Plot one or more run logs on shared axes, so ablations read at a glance.

    python tools/plot.py RUN_LOG [RUN_LOG ...] -o report.png [--artifact ARTIFACT [--code train_gpt.py]]

Panels: train loss against wallclock and against step; val BPB (periodic points, and the final
prequant / round-trip / TTT scores at the last step); step time; with --artifact, compressed bytes
by tensor group and code bytes against the 16,000,000-byte budget; a table of final numbers (a claim that is
only a pre-quantisation val is starred, with golf/logparse.py's "no artifact score: ..." label below the table).
Each run is labelled by its run id (the log's file name), its `recipe:` if logged, and the config
fields that differ between the logs given. Reads ours and upstream's log formats (golf/logparse.py);
lines that look like results but do not parse are listed on stderr, one line per log.
Exit 2 with one line on stderr for a missing or unreadable log, artifact or output folder.
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import matplotlib  # noqa: E402
except ImportError:  # a main dependency since issue 17; an older install may lack it
    print("plot: matplotlib is not installed; run `pip install -e .` again (or `pip install matplotlib`)", file=sys.stderr)
    sys.exit(2)
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from golf.artifact import artifact_report  # noqa: E402
from golf.config import GolfError  # noqa: E402
from golf.logparse import (KIND_NAMES, PREQUANT, ROUNDTRIP, SLIDING, TTT, RunSummary, config_differences,  # noqa: E402
                           eval_kind, read_run_logs, run_names, unread_note)
from tools.size_check import CHALLENGE_LIMIT  # noqa: E402

MAX_LABEL_FIELDS = 4  # differing config fields shown in a legend label; the rest are counted
# Marker of each kind of final score (golf/logparse.py's eval kind of its label), so a run's colour stays its own.
FINAL_MARKERS = {TTT: "^", SLIDING: "v", ROUNDTRIP: "s", PREQUANT: "o"}


def field_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def run_labels(summaries: list[RunSummary]) -> list[str]:
    """'<run id> [<recipe>] field=value, ...' with only the config fields that differ between runs."""
    differing = config_differences(summaries)
    labels = []
    for name, s in zip(run_names(summaries), summaries):
        parts = [name + (f" [{s.recipe}]" if s.recipe else "")]
        fields = [k for k in differing if k in s.config_fields]  # none in an upstream log, fewer in an older one
        shown = [f"{k}={field_text(s.config_fields.get(k))}" for k in fields[:MAX_LABEL_FIELDS]]
        if len(fields) > MAX_LABEL_FIELDS:
            shown.append(f"+{len(differing) - MAX_LABEL_FIELDS} more")
        labels.append(" ".join(parts + ([", ".join(shown)] if shown else [])))
    return labels


def empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def plot_steps(ax, summaries, colors, x_key: str, y_key: str, xlabel: str, ylabel: str, title: str,
               x_scale: float = 1.0, log_y_if_spread: bool = False) -> None:
    drawn = False
    for s, color in zip(summaries, colors):
        rows = [r for r in s.steps if r.get(x_key) is not None and r.get(y_key) is not None]
        if rows:
            ax.plot([r[x_key] * x_scale for r in rows], [r[y_key] for r in rows], color=color, lw=1.2,
                    marker="." if len(rows) < 30 else None)
            drawn = True
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ys = [r[y_key] for s in summaries for r in s.steps if r.get(y_key) and r[y_key] > 0]
    if log_y_if_spread and ys and max(ys) > 20 * min(ys):  # e.g. a CPU smoke run beside GPU runs
        ax.set_yscale("log")
        ax.set_ylabel(ylabel + " (log scale)")
    if not drawn:
        empty_note(ax, f"no {y_key} on step lines")


def final_marker(label: str) -> tuple[str, str]:
    kind = eval_kind(label)
    return (FINAL_MARKERS[kind], KIND_NAMES[kind]) if kind in FINAL_MARKERS else ("D", label)


def plot_val_bpb(ax, summaries, colors) -> None:
    """Periodic val lines as a curve; final scores as markers at the run's last step."""
    kinds = {}
    max_step = max([r["step"] for s in summaries for r in s.steps + s.vals], default=0)
    for i, (s, color) in enumerate(zip(summaries, colors)):
        if s.vals:
            ax.plot([r["step"] for r in s.vals], [r["val_bpb"] for r in s.vals], color=color, lw=1.2, marker=".")
        # Runs that stop at the same step are nudged apart (1% of the axis each) so their markers stay visible.
        x = max([r["step"] for r in s.steps + s.vals], default=0) + 0.01 * max_step * i
        for label, bpb in s.finals:
            marker, name = final_marker(label)
            ax.scatter([x], [bpb], color=color, marker=marker, s=50, zorder=3, edgecolors="black", linewidths=0.5)
            kinds[name] = marker
        roundtrip = s.roundtrip_bpb()
        if roundtrip is not None and len(summaries) == 1:  # several runs: the table below has the numbers
            ax.annotate(f"{roundtrip:.4f}", (x, roundtrip), textcoords="offset points", xytext=(6, -3),
                        fontsize=8, color=color)
    for name, marker in kinds.items():  # legend entries for the marker shapes only
        ax.scatter([], [], marker=marker, color="0.6", edgecolors="black", linewidths=0.5, label=name)
    if kinds:
        ax.legend(fontsize=8, loc="upper right")
    ax.set(xlabel="step", ylabel="val bpb", title="validation bits per byte (lower is better)")
    ax.grid(alpha=0.3)
    if not kinds and not any(s.vals for s in summaries):
        empty_note(ax, "no val_bpb lines")


def artifact_sizes(artifact: str, code: str | None) -> list[tuple[str, int]]:
    """(name, bytes) of each tensor group of the artifact (header + checksum included), then the code."""
    sizes = [(r["group"], r["compressed_bytes"]) for r in artifact_report(artifact)]
    if code:
        try:
            sizes.append(("code", os.path.getsize(code)))
        except OSError as e:
            raise GolfError(f"{code}: cannot read: {e.strerror or e}") from None
    return sizes


def plot_artifact(ax, artifact: str, named_sizes: list[tuple[str, int]]) -> None:
    """Compressed bytes per tensor group, the code, and their total stacked against the budget."""
    names = [name for name, _ in named_sizes]
    sizes = [size for _, size in named_sizes]
    code = "code" in names
    colors = [plt.cm.tab20(i % 20) for i in range(len(names))]
    mb = [b / 1e6 for b in sizes]
    ax.bar(range(len(names)), mb, color=colors)
    bottom = 0.0
    for size, color in zip(mb, colors):  # the total: the same pieces stacked
        ax.bar(len(names), size, bottom=bottom, color=color)
        bottom += size
    total = sum(sizes)
    for i, size in enumerate(mb + [bottom]):
        ax.annotate(f"{size:.3f}", (i, size), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    ax.axhline(CHALLENGE_LIMIT / 1e6, color="crimson", ls="--", lw=1.2)
    verdict = "fits" if total <= CHALLENGE_LIMIT else "OVER"
    ax.text(0.02, CHALLENGE_LIMIT / 1e6, f" budget {CHALLENGE_LIMIT:,} B: total {total:,} B {verdict}, "
            f"headroom {CHALLENGE_LIMIT - total:,} B", va="bottom", fontsize=8, color="crimson",
            transform=ax.get_yaxis_transform())
    ax.set_xticks(range(len(names) + 1), names + ["total" + ("" if code else "\n(no --code)")], rotation=30,
                  ha="right", fontsize=8)
    ax.set_ylim(0, max(CHALLENGE_LIMIT, total) / 1e6 * 1.12)
    ax.set(ylabel="MB (10^6 bytes)", title=f"artifact bytes by group: {Path(artifact).name}")
    ax.grid(axis="y", alpha=0.3)


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def results_cells(summaries: list[RunSummary]) -> tuple[list[list[str]], list[str]]:
    """The final-numbers table's rows, one per run, and a note per run whose claim is no artifact score (its
    claimed cell starred; the note is golf/logparse.py's label) or whose artifact the size fallback rewrote (its
    bytes marked +)."""
    cells, notes = [], []
    for s, name in zip(summaries, run_names(summaries)):
        claim = s.reported_claim()
        prequant_only = claim is not None and claim["kind"] == PREQUANT
        cells.append([name, fmt(s.final_step(), ",d"), fmt(s.step_avg_ms(), ".1f"),
                      fmt(s.prequant_bpb(), ".4f"), fmt(s.roundtrip_bpb(), ".4f"), fmt(s.ttt_bpb(), ".4f"),
                      fmt(claim and claim["val_bpb"], ".4f") + ("*" if prequant_only else ""),
                      fmt(s.get("total_bytes"), ",.0f") + ("+" if s.size_fallback() else "")])
        if prequant_only:
            notes.append(f"* {name}: {claim['label']}")
        if s.size_fallback():
            notes.append(f"+ {name}: size_fallback rewrote the artifact without AWQ-lite's groups")
    return cells, notes


def plot_results_table(ax, summaries, colors) -> None:
    ax.axis("off")
    header = ["run", "steps", "step ms", "pre-quant", "round trip", "TTT", "claimed", "total bytes"]
    cells, notes = results_cells(summaries)
    if notes:
        ax.text(0.5, 0.0, "\n".join(notes), ha="center", va="bottom", fontsize=8, transform=ax.transAxes)
    table = ax.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(header))))
    table.scale(1, 1.4)
    for row, color in enumerate(colors, start=1):
        table[row, 0].set_text_props(color=color, weight="bold")
    ax.set_title("final numbers (bpb: lower is better)")


def plot_report(summaries: list[RunSummary], out: str, artifact: str | None, named_sizes) -> None:
    labels = run_labels(summaries)
    colors = [plt.cm.tab10(i % 10) for i in range(len(summaries))]
    ncol = 1 if len(labels) > 3 or max(map(len, labels)) > 60 else len(labels)
    legend_rows = -(-len(labels) // ncol)
    fig = plt.figure(figsize=(14, 13 if artifact else 11), dpi=100)
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1, 0.9 if artifact else 0.4], hspace=0.45, wspace=0.22,
                            top=0.95 - 0.016 * legend_rows, bottom=0.06)
    plot_steps(fig.add_subplot(grid[0, 0]), summaries, colors, "train_time_ms", "train_loss", "wallclock (s)",
               "train loss (nats)", "train loss vs wallclock", x_scale=1e-3)
    plot_steps(fig.add_subplot(grid[0, 1]), summaries, colors, "step", "train_loss", "step", "train loss (nats)",
               "train loss vs step")
    plot_val_bpb(fig.add_subplot(grid[1, 0]), summaries, colors)
    plot_steps(fig.add_subplot(grid[1, 1]), summaries, colors, "step", "step_avg_ms", "step", "ms",
               "average step time", log_y_if_spread=True)
    if artifact:
        plot_artifact(fig.add_subplot(grid[2, 0]), artifact, named_sizes)
        plot_results_table(fig.add_subplot(grid[2, 1]), summaries, colors)
    else:
        plot_results_table(fig.add_subplot(grid[2, :]), summaries, colors)
    for ax in fig.axes:
        if ax.get_yscale() == "linear":
            ax.ticklabel_format(axis="y", useOffset=False)  # '+2.894' offsets hide the values that matter
    handles = [plt.Line2D([], [], color=c, lw=2.5) for c in colors]
    fig.legend(handles, labels, loc="upper center", ncol=ncol, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.995))
    save_figure(fig, out)
    plt.close(fig)


def save_figure(fig, out: str) -> None:
    """Write atomically (temp file in the same folder, then rename), so a failed run keeps the old file."""
    path = Path(out)
    fmt_name = path.suffix.lstrip(".").lower() or "png"
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format=fmt_name)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", metavar="RUN_LOG")
    parser.add_argument("-o", "--output", required=True, help="image to write (.png, .svg, .pdf)")
    parser.add_argument("--artifact", help="final_model.golf: adds the bytes-by-group panel")
    parser.add_argument("--code", help="the shipped train_gpt.py: its bytes join the artifact panel")
    args = parser.parse_args(argv)
    try:
        if args.code and not args.artifact:
            raise GolfError(f"--code {args.code}: needs --artifact (the code bytes are drawn with the artifact's)")
        if not Path(args.output).parent.is_dir():
            raise GolfError(f"{args.output}: folder {Path(args.output).parent} does not exist")
        summaries = read_run_logs(args.logs)
        named_sizes = artifact_sizes(args.artifact, args.code) if args.artifact else None
        for s in summaries:
            note = unread_note(s)
            if note:
                print(f"plot: {note}", file=sys.stderr)
        plot_report(summaries, args.output, args.artifact, named_sizes)
    except GolfError as e:
        print(f"plot: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
