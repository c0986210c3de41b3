"""Read run logs: ours and upstream's `key:value` lines, into numbers tools can compare.

Not part of the packed training file; used by tools/smoke.py, submit.py, plot.py and compare.py.
"""

import re
from dataclasses import dataclass, field

KV = re.compile(r"([A-Za-z_]+):(-?[0-9.]+(?:e-?\d+)?)(ms|s)?")


@dataclass
class RunSummary:
    path: str
    steps: list[dict] = field(default_factory=list)  # each {step, train_loss, train_time_ms, step_avg_ms}
    vals: list[dict] = field(default_factory=list)  # each {step, val_loss, val_bpb}
    values: dict = field(default_factory=dict)  # last value seen for each final-line key, e.g. 'final_roundtrip.val_bpb'
    config: str | None = None
    unread: list[str] = field(default_factory=list)  # lines that looked like results but did not parse
    units: dict = field(default_factory=dict)  # key -> "ms" | "s" | "" as the log wrote it
    meta: dict = field(default_factory=dict)  # strings: code, sha256, recipe, git, python, torch, cuda

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def seconds(self, key: str, default=None):
        """A time value in seconds whatever unit the log used (ours: eval_time:12.3s; upstream: eval_time:12345ms)."""
        if key not in self.values:
            return default
        return self.values[key] / 1000 if self.units.get(key) == "ms" else self.values[key]

    def final_roundtrip(self) -> tuple[float, float] | None:
        """(val_loss, val_bpb) of the reloaded artifact: ours `final_roundtrip`, upstream `final_*roundtrip*`
        (the `_exact` line when there is one)."""
        prefixes = sorted({k.rsplit(".", 1)[0] for k in self.values if k.startswith("final_") and "roundtrip" in k},
                          key=lambda p: (p != "final_roundtrip", not p.endswith("_exact"), p))
        for p in prefixes:
            if f"{p}.val_bpb" in self.values and f"{p}.val_loss" in self.values:
                return self.values[f"{p}.val_loss"], self.values[f"{p}.val_bpb"]
        return None


# Upstream: "Total submission size int8+zlib: 15863489 bytes", "Code size: 47642 bytes".
UPSTREAM_BYTES = {"total_bytes": re.compile(r"Total submission size[^:]*:\s*(\d+) bytes"),
                  "code_bytes": re.compile(r"Code size[^:]*:\s*(\d+) bytes")}


def line_values(line: str) -> dict[str, float]:
    return {k: float(v) for k, v, _ in KV.findall(line)}


def result_lines(lines: list[str]) -> list[str]:
    """The lines that are not a logged copy of the source. Ours: between `==== source ====` and
    `==== end source ====` banners (no end banner: to the end). Upstream: the script's source, then a
    line of '=' characters, before the run's lines."""
    if not any(ln.startswith("=" * 40 + " source ") for ln in lines):
        rule = next((i for i, ln in enumerate(lines) if len(ln.strip()) >= 40 and set(ln.strip()) == {"="}), None)
        return lines[rule + 1:] if rule is not None else lines
    out, in_source = [], False
    for ln in lines:
        if ln.startswith("=" * 40 + " source "):
            in_source = True
        elif ln.startswith("=" * 40 + " end source "):
            in_source = False
        elif not in_source:
            out.append(ln)
    return out


def parse_meta(line: str, meta: dict) -> bool:
    """Provenance lines of ours, kept as strings: code/sha256, recipe/git, versions."""
    if line.startswith(("code:", "recipe:", "versions:")):
        for word in line.split():
            key, _, value = word.partition(":")
            if value:
                meta[key] = value
        return True
    return False


def parse_run_log(path: str) -> RunSummary:
    summary = RunSummary(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for raw in result_lines(lines):
        line = raw.strip()
        if line.startswith("config:"):
            summary.config = line[len("config:"):]
            continue
        if parse_meta(line, summary.meta):
            continue
        upstream = [(k, float(m.group(1))) for k, rx in UPSTREAM_BYTES.items() if (m := rx.search(line))]
        if upstream:
            summary.values.update(upstream)
            continue
        vals = line_values(line)
        step = re.match(r"step:(\d+)/(\d+)", line)
        if step and "train_loss" in vals:
            summary.steps.append(dict(step=int(step.group(1)), train_loss=vals["train_loss"],
                                      train_time_ms=vals.get("train_time"), step_avg_ms=vals.get("step_avg")))
        elif step and "val_bpb" in vals:
            summary.vals.append(dict(step=int(step.group(1)), val_loss=vals.get("val_loss"), val_bpb=vals["val_bpb"]))
        elif vals:
            prefix = line.split()[0] if " " in line and ":" not in line.split()[0] else ""
            units = {k: u for k, _, u in KV.findall(line)}
            for k, v in vals.items():
                summary.values[f"{prefix}.{k}" if prefix else k] = v
                summary.units[f"{prefix}.{k}" if prefix else k] = units[k]
        elif any(w in line for w in ("val_bpb", "train_loss", "total_bytes")):
            summary.unread.append(line)
    return summary
