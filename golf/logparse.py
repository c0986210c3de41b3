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

    def get(self, key: str, default=None):
        return self.values.get(key, default)


def line_values(line: str) -> dict[str, float]:
    return {k: float(v) for k, v, _ in KV.findall(line)}


def parse_run_log(path: str) -> RunSummary:
    summary = RunSummary(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.strip()
            if line.startswith("=" * 40):
                break  # the logged source follows: nothing of the run's results below
            if line.startswith("config:"):
                summary.config = line[len("config:"):]
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
                for k, v in vals.items():
                    summary.values[f"{prefix}.{k}" if prefix else k] = v
            elif any(w in line for w in ("val_bpb", "train_loss", "total_bytes")):
                summary.unread.append(line)
    return summary
