"""Read run logs: ours and upstream's `key:value` lines, into numbers tools can compare.

Not part of the packed training file; used by tools/smoke.py, submit.py, plot.py and compare.py.

Both formats log the source of the run next to its results, and the parser must skip it (the
source holds f-strings and comments that look like result lines):
- ours (golf/train.py): `code:<file> sha256:<hash> bytes:<n>`, later a `==== source ====` line,
  then exactly those n bytes of source (newer logs then add an `==== end source ====` line), then
  more result lines;
- upstream's logs/<run_id>.txt: the source first, then a line of '=' alone, versions and
  nvidia-smi, another '=' line, then the run. Their console logs (train.log) have no source.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from golf.config import GolfError

NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|-?nan|-?inf"
# A key, its number and an optional unit; the number must end the token ('3.11.7' and
# '23e65fd' are not numbers, so they yield nothing rather than a wrong value).
KV = re.compile(rf"([A-Za-z_][A-Za-z_0-9]*):({NUMBER})(ms|s|x)?(?![\w.])")
STEP = re.compile(r"step:(\d+)/(\d+)\b")
SOURCE_BANNER = "=" * 40 + " source "  # ours: '=' * 40 + " source " + '=' * 40
END_SOURCE_BANNER = "=" * 40 + " end source "
PROVENANCE_PREFIXES = ("code:", "recipe:", "versions:")  # lines of words kept as strings in RunSummary.meta
# Upstream's size lines carry no key:value: 'Serialized model int8+zlib: 15815847 bytes (...)'.
UPSTREAM_SIZES = [(re.compile(r"Serialized model \S+: (\d+) bytes"), "artifact_bytes"),
                  (re.compile(r"Code size: (\d+) bytes"), "code_bytes"),
                  (re.compile(r"Total submission size \S+: (\d+) bytes"), "total_bytes")]
# Keys whose value is a result: a malformed value of one of these is reported, never skipped silently.
RESULT_KEY = re.compile(r"(?:train_loss|val_loss|val_bpb|train_time|step_avg|eval_time|\w*_bytes)$")
TOKEN_KV = re.compile(r"(\w+):(\S*)")
FULL_VALUE = re.compile(rf"(?:{NUMBER})(?:ms|s|x)?\)?|[A-Za-z]+")  # a number, or a word like 'enabled'


@dataclass
class RunSummary:
    path: str
    steps: list[dict] = field(default_factory=list)  # each {step, train_loss, train_time_ms, step_avg_ms}
    vals: list[dict] = field(default_factory=list)  # each {step, val_loss, val_bpb, train_time_ms}
    values: dict = field(default_factory=dict)  # last value seen for each final-line key, e.g. 'final_roundtrip.val_bpb'
    config: str | None = None  # the `config:` line's JSON text, as logged
    unread: list[str] = field(default_factory=list)  # lines that looked like results but did not parse
    units: dict = field(default_factory=dict)  # key of `values` -> 'ms' | 's' where the log gave a unit
    meta: dict = field(default_factory=dict)  # strings: code, sha256, bytes, recipe, git, python, torch, cuda
    config_fields: dict = field(default_factory=dict)  # the `config:` JSON, parsed
    finals: list[tuple[str, float]] = field(default_factory=list)  # (line label, val_bpb) of non-step val lines, in order

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    @property
    def run_id(self) -> str:
        """The log file's name without its extension (ours: <out_dir>/logs/<RUN_ID>.txt)."""
        return Path(self.path).stem

    @property
    def recipe(self) -> str | None:
        return self.meta.get("recipe")

    def seconds(self, key: str, default=None):
        """A time value in seconds whatever unit the log used (ours: eval_time:12.3s; upstream: eval_time:1406ms)."""
        if key not in self.values:
            return default
        return self.values[key] / 1000 if self.units.get(key) == "ms" else self.values[key]

    def last_final(self, wanted) -> str | None:
        """Label of the last final line that `wanted` accepts; a `*_exact` line (upstream logs the
        same score twice, once with more digits) wins over one without."""
        found = [(label.endswith("_exact"), i, label) for i, (label, _) in enumerate(self.finals) if wanted(label)]
        return max(found)[2] if found else None

    def final_roundtrip(self) -> tuple[float, float] | None:
        """(val_loss, val_bpb) of the reloaded artifact: ours `final_roundtrip`, upstream
        `final_<quant>_roundtrip[_exact]`."""
        label = self.last_final(lambda lb: lb.startswith("final_") and "roundtrip" in lb and "ttt" not in lb)
        if label is None or f"{label}.val_loss" not in self.values:
            return None
        return self.values[f"{label}.val_loss"], self.values[f"{label}.val_bpb"]

    def claimed_score(self) -> tuple[float, float] | None:
        """(val_loss, val_bpb) the run claims: its score-first TTT eval of the reloaded artifact when it ran one
        (ours `final_ttt`, upstream e.g. `legal_ttt_exact`), else the plain round trip."""
        label = self.last_final(lambda lb: "ttt" in lb)
        if label is not None and f"{label}.val_loss" in self.values:
            return self.values[f"{label}.val_loss"], self.values[f"{label}.val_bpb"]
        return self.final_roundtrip()

    def roundtrip_bpb(self) -> float | None:
        final = self.final_roundtrip()
        return final[1] if final else None

    def ttt_bpb(self) -> float | None:
        """Ours: `final_ttt`. Upstream records: a `*ttt*` line such as `legal_ttt_exact`."""
        label = self.last_final(lambda lb: "ttt" in lb)
        return None if label is None else self.values[f"{label}.val_bpb"]

    def final_step(self) -> int | None:
        """Steps trained: ours `stopped step:N`, upstream `stopping_early: .. step:N/M`, else the last step logged."""
        for key in ("stopped.step", "stopping_early.step"):
            if self.get(key) is not None:
                return int(self.get(key))
        return max([r["step"] for r in self.steps + self.vals], default=None)

    def prequant_bpb(self) -> float | None:
        """Ours: the `prequant` line. Upstream: the last periodic val line (scored before quantising)."""
        ours = self.get("prequant.val_bpb")
        if ours is not None:
            return ours
        return self.vals[-1]["val_bpb"] if self.vals else None

    def train_seconds(self) -> float | None:
        """Training wallclock: ours `stopped train_time`, else the last train_time on a step line."""
        if self.get("stopped.train_time") is not None:
            return self.seconds("stopped.train_time")
        times = [r["train_time_ms"] for r in self.steps + self.vals if r.get("train_time_ms") is not None]
        return max(times) / 1000 if times else None

    def eval_seconds(self) -> float | None:
        """Ours: `eval_time` (all of evaluation). Upstream: the sum of its final lines' eval_time."""
        if self.get("eval_time") is not None:
            return self.seconds("eval_time")
        parts = [self.seconds(k) for k in self.values if k.endswith(".eval_time")]
        return sum(parts) if parts else None


def line_values(line: str) -> dict[str, float]:
    return {k: float(v) for k, v, _ in KV.findall(line)}


def malformed_result(line: str) -> bool:
    """A result key (val_bpb, train_loss, ..._bytes) whose value is neither a number nor a plain word."""
    return any(RESULT_KEY.match(k) and not FULL_VALUE.fullmatch(v) for k, v in TOKEN_KV.findall(line))


def line_prefix(line: str) -> str:
    """The label of a final line: 'final_roundtrip val_bpb:..' -> 'final_roundtrip';
    'stopping_early: wallclock_cap ..' -> 'stopping_early'; '' when the line starts with key:value."""
    first = line.split()[0] if " " in line else ""
    if first.endswith(":") and first.count(":") == 1:
        return first[:-1]
    return first if ":" not in first else ""


def read_line(summary: RunSummary, line: str) -> None:
    """Fold one result line into summary."""
    if line.startswith("config:"):
        summary.config = line[len("config:"):]
        try:
            summary.config_fields = json.loads(summary.config)
        except ValueError:
            summary.unread.append(line)
        return
    if line.startswith(PROVENANCE_PREFIXES):
        for word in line.split():
            key, _, value = word.partition(":")
            if value:
                summary.meta[key] = value
        return
    if malformed_result(line):
        summary.unread.append(line)
        return
    for pattern, key in UPSTREAM_SIZES:
        m = pattern.match(line)
        if m:
            summary.values[key] = float(m.group(1))
            return
    vals = line_values(line)
    step = STEP.match(line)
    if step:
        row = dict(step=int(step.group(1)), train_time_ms=vals.get("train_time"))
        if "train_loss" in vals:
            summary.steps.append(dict(row, train_loss=vals["train_loss"], step_avg_ms=vals.get("step_avg")))
        elif "val_bpb" in vals:
            summary.vals.append(dict(row, val_loss=vals.get("val_loss"), val_bpb=vals["val_bpb"]))
        else:
            summary.unread.append(line)  # a step line that is neither: cut short or garbled
        return
    prefix = line_prefix(line)
    for k, v, unit in KV.findall(line):
        key = f"{prefix}.{k}" if prefix else k
        summary.values[key] = float(v)
        if unit in ("ms", "s"):
            summary.units[key] = unit
    if "val_bpb" in vals and prefix:
        summary.finals.append((prefix, vals["val_bpb"]))


def parse_run_log(path: str) -> RunSummary:
    """Every result line of a log, ours or upstream's; the logged source is skipped (see the module doc)."""
    with open(path, "rb") as f:
        data = f.read()
    summary = RunSummary(path)
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line = data[pos:end].decode("utf-8", errors="replace").strip()
        pos = end + 1
        if line.startswith(SOURCE_BANNER):
            pos = source_end(data, pos, summary)
        elif line.startswith(END_SOURCE_BANNER):
            continue
        elif len(line) >= 40 and set(line) == {"="}:
            summary = RunSummary(path)  # upstream: everything above was its source (or versions/nvidia-smi)
        elif line:
            read_line(summary, line)
    return summary


def source_end(data: bytes, start: int, summary: RunSummary) -> int:
    """Where the results resume after our logged source that begins at `start`: exactly the byte
    count the `code:` line gave; without one, at the end banner; without that, nowhere (noted)."""
    if summary.meta.get("bytes", "").isdigit():
        return start + int(summary.meta["bytes"])  # the log's own newline after it reads as an empty line
    banner = data.find(b"\n" + END_SOURCE_BANNER.encode(), start - 1)
    if banner >= 0:
        return banner + 1
    summary.unread.append("(a logged source without a `code:... bytes:N` line or an end banner: nothing after it "
                          "was read)")
    return len(data)


def config_differences(summaries: list[RunSummary], ignore=("run_id", "out_dir")) -> list[str]:
    """Config fields whose value differs between the runs that logged a config (upstream logs have
    none: they take no part); fields in `ignore` differ by design and say nothing about the recipe.
    Fields every run logged come first: those are the recipe's real differences; fields only newer
    builds log (older runs lack them) follow."""
    configs = [s.config_fields for s in summaries if s.config_fields]
    keys = sorted({k for c in configs for k in c} - set(ignore), key=lambda k: (not all(k in c for c in configs), k))
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def read_run_logs(paths: list[str]) -> list[RunSummary]:
    """Parse each log; a missing file or one with no run lines at all is a GolfError naming it."""
    summaries = []
    for path in paths:
        try:
            summary = parse_run_log(path)
        except OSError as e:
            raise GolfError(f"{path}: cannot read: {e.strerror or e}") from None
        if not (summary.steps or summary.vals or summary.finals or summary.config_fields):
            raise GolfError(f"{path}: no run lines found (no step:, val_bpb or config: lines); is it a run log?")
        summaries.append(summary)
    return summaries


def unread_note(summary: RunSummary) -> str | None:
    """One line saying which lines of a log were not read, or None."""
    if not summary.unread:
        return None
    return f"{summary.path}: {len(summary.unread)} result-like line(s) not read; first: {summary.unread[0]!r}"


def run_names(summaries: list[RunSummary]) -> list[str]:
    """Run ids, made unique where they collide by the run's folder (ours: <out_dir>/logs/<run_id>.txt)."""
    ids = [s.run_id for s in summaries]
    names = []
    for s in summaries:
        if ids.count(s.run_id) == 1:
            names.append(s.run_id)
            continue
        folder = Path(s.path).resolve().parent
        folder = folder.parent if folder.name == "logs" else folder
        names.append(f"{folder.name}/{s.run_id}")
    return names
