"""Read run logs, ours and every generation of upstream's, into numbers tools can compare.

Not part of the packed training file; used by tools/smoke.py, submit.py, plot.py and compare.py.

Both formats log the source of the run next to its results, and the parser must skip it (the
source holds f-strings and comments that look like result lines):
- ours (golf/train.py): `code:<file> sha256:<hash> bytes:<n>`, later a `==== source ====` line,
  then exactly those n bytes of source (newer logs then add an `==== end source ====` line), then
  more result lines;
- upstream's logs/<run_id>.txt: the source first, then a line of '=' alone, versions and
  nvidia-smi, another '=' line, then the run. Their console logs (train*.log) have no source.

Line shapes read (upstream's, March baseline to the late-April phased-TTT records):
- `key:value` and `key: value` (any spaces after the colon), values with a unit `ms`, `s` or `m`
  (minutes: `train_time: 0.0m`); a leading epoch stamp (`1776143355.743 ...`) is dropped;
- step lines `step:N/M ...`, or bare `N/M train_loss: ...` / `N/M val_loss: ...`; the ternary
  records' `step:N/M loss:.. t:..ms avg:..ms`;
- scored lines: a label of one or more words, then `val_loss:` and `val_bpb:` (`final_int8_zlib_roundtrip_exact`,
  `diagnostic quantized`, `quantized_ttt_phased`, `legal_ttt_exact`, `final_sliding_window_eval stride:64 ...`);
- size lines in prose: `Serialized model <how>: N bytes`, `Code size: N bytes`, `Code size (compressed): N bytes`,
  `Total submission size <how>: N bytes`, the ternary records' `budget:N/16000000`.

THE CLAIMED SCORE (the one place this order is written down; RunSummary.claimed follows it):
  1. Only a score of the artifact as shipped counts: a pre-quantisation line (`prequant`,
     `pre-quantization post-ema`, `DIAGNOSTIC post_ema`) is never the claim.
  2. By eval kind: TTT (label holds `ttt`) > sliding window (`sliding`) > plain round trip
     (`roundtrip`, `quantized`, `ternary`).
  3. Within a kind, a quantised eval over one labelled `diagnostic`.
  4. Then `*_exact` (more digits) over its rounded twin.
  5. Then the later line.
A round-trip-named line that repeats an earlier sliding or TTT score's exact val_loss and val_bpb is a re-log
of it and keeps that kind (late-March records re-log the sliding score as `final_int8_zlib_roundtrip_exact`);
a round trip equal to the pre-quant score stays a round trip.
A log with none of these has no claimed score. A reader is then shown its pre-quantisation score (the `prequant`
line, else the last periodic val line) labelled "no artifact score: the claimed X is the pre-quantisation val"
(RunSummary.reported_claim); the run did not finish only where the log does not show training reach its end
(RunSummary.training_end: a stop line, or a step line at its own cap).
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from golf.config import GolfError

NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|-?nan|-?inf"
# A key, its number and an optional unit; the number must end the token ('3.11.7' and
# '23e65fd' are not numbers, so they yield nothing rather than a wrong value).
KV = re.compile(rf"([A-Za-z_][A-Za-z_0-9]*):({NUMBER})(ms|s|m|x)?(?![\w.])")
STEP = re.compile(r"(?:step:)?(\d+)/(\d+)(?=\s)")
SPACED_KV = re.compile(r"(\b[A-Za-z_]\w*):\s+(?=-?(?:\d|\.\d|nan\b|inf\b))")  # 'val_bpb: 1.07' -> 'val_bpb:1.07'
EPOCH_STAMP = re.compile(r"^\d{9,}\.\d+\s+")  # '1776143355.743 diagnostic quantized ...'
TORCH_WARNING = re.compile(r"^[WIE]\d{4} \d\d:\d\d:\d\d")  # torchrun's 'W0426 19:59:28.614000 ... run.py:803]'
SOURCE_BANNER = "=" * 40 + " source "  # ours: '=' * 40 + " source " + '=' * 40
END_SOURCE_BANNER = "=" * 40 + " end source "
PROVENANCE_PREFIXES = ("code:", "recipe:", "versions:")  # lines of words kept as strings in RunSummary.meta
# Upstream's size lines carry no key:value. 'Serialized model: N' and 'Total submission size: N' without a
# qualifier are the raw (unquantised) model; a qualifier ('int8+zlib', 'quantized+pergroup') marks the artifact.
UPSTREAM_SIZES = [(re.compile(r"Serialized model: (\d+) bytes"), "raw_model_bytes"),
                  (re.compile(r"Serialized model [^:]+: (\d+) bytes"), "artifact_bytes"),
                  (re.compile(r"Code size: (\d+) bytes"), "code_bytes"),
                  (re.compile(r"Code size \(compressed\): (\d+) bytes"), "code_bytes"),
                  (re.compile(r"Code size \(uncompressed\): (\d+) bytes"), "code_raw_bytes"),
                  (re.compile(r"Total submission size: (\d+) bytes"), "raw_total_bytes"),
                  (re.compile(r"Total submission size [^:]+: (\d+) bytes"), "total_bytes"),
                  (re.compile(r"budget:(\d+)/\d+ "), "total_bytes")]  # ternary: 'budget:15993853/16000000 (..) FITS'
# Step-line keys of the ternary records, as the rest spell them.
STEP_ALIASES = {"loss": "train_loss", "t": "train_time", "avg": "step_avg"}
SEED_LINE = re.compile(r"^seed:(\d+)$|\bseed=(\d+)\b")  # 'seed: 42' alone (hyperparameter dumps) or 'seed=42'
# Keys whose value is a result: a malformed value of one of these is reported, never skipped silently.
RESULT_KEY = re.compile(r"(?:train_loss|val_loss|val_bpb|train_time|step_avg|eval_time|\w*_bytes)$")
TOKEN_KV = re.compile(r"(\w+):(\S*)")
# A number, or words like 'enabled', 'byte_sidecar:enabled'.
FULL_VALUE = re.compile(rf"(?:{NUMBER})(?:ms|s|m|x)?\)?|[A-Za-z][\w:]*")
TO_MS = {"ms": 1.0, "s": 1000.0, "m": 60000.0}

# Eval kinds in claim order (see the module doc); PREQUANT and OTHER are never claimed.
OTHER, PREQUANT, ROUNDTRIP, SLIDING, TTT = range(5)
KIND_NAMES = {OTHER: "other", PREQUANT: "pre-quant", ROUNDTRIP: "round trip", SLIDING: "sliding", TTT: "TTT"}
PREQUANT_LABEL = re.compile(r"pre[-_ ]?quant|post[-_]ema")
PREQUANT_CLAIM = "no artifact score: the claimed {bpb} is the pre-quantisation val"  # RunSummary.reported_claim


def eval_kind(label: str) -> int:
    """Which kind of eval a scored line's label names (module doc, rule 2)."""
    low = label.lower()
    if PREQUANT_LABEL.search(low) and "ttt" not in low and "sliding" not in low:
        return PREQUANT
    if "ttt" in low:
        return TTT
    if "sliding" in low:
        return SLIDING
    if "roundtrip" in low or "quant" in low or "ternary" in low:
        return ROUNDTRIP
    return OTHER


def claim_rank(kind: int, label: str, index: int) -> tuple:
    """Sort key of a scored line (its eval kind, label, position) for the claim: rules 2-5 of the module doc."""
    return kind, "diagnostic" not in label.lower(), label.endswith("_exact"), index


@dataclass
class RunSummary:
    path: str
    steps: list[dict] = field(default_factory=list)  # each {step, train_loss, train_time_ms, step_avg_ms}
    vals: list[dict] = field(default_factory=list)  # each {step, val_loss, val_bpb, train_time_ms}
    values: dict = field(default_factory=dict)  # last value seen for each final-line key, e.g. 'final_roundtrip.val_bpb'
    config: str | None = None  # the `config:` line's JSON text, as logged
    unread: list[str] = field(default_factory=list)  # lines that looked like results but did not parse
    units: dict = field(default_factory=dict)  # key of `values` -> 'ms' | 's' | 'm' where the log gave a unit
    meta: dict = field(default_factory=dict)  # strings: code, sha256, bytes, recipe, git, python, torch, cuda, seed
    config_fields: dict = field(default_factory=dict)  # the `config:` JSON, parsed
    finals: list[tuple[str, float]] = field(default_factory=list)  # (line label, val_bpb) of non-step val lines, in order
    scores: list[dict] = field(default_factory=list)  # each {label, val_loss, val_bpb, eval_ms} of those lines
    size_lines: dict = field(default_factory=dict)  # values key -> the size line it came from (its counting rule)
    step_cap: int | None = None  # M of the last `step:N/M` line: the iterations the run was set to

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    @property
    def run_id(self) -> str:
        """The log file's name without its extension (ours: <out_dir>/logs/<RUN_ID>.txt)."""
        return Path(self.path).stem

    @property
    def recipe(self) -> str | None:
        return self.meta.get("recipe")

    def seed(self) -> int | None:
        """Ours: the config's seed; upstream: a `seed: N` / `seed:N` line alone, or `seed=N` in a dump."""
        if "seed" in self.config_fields:
            return int(self.config_fields["seed"])
        return int(self.meta["seed"]) if "seed" in self.meta else None

    def seconds(self, key: str, default=None):
        """A time value in seconds whatever unit the log used (ours: eval_time:12.3s; upstream: eval_time:1406ms)."""
        if key not in self.values:
            return default
        return self.values[key] * TO_MS.get(self.units.get(key), 1000.0) / 1000

    def best(self, kinds) -> dict | None:
        """The scored line that the claim order ranks first among those of `kinds`."""
        found = [(claim_rank(s["kind"], s["label"], i), s) for i, s in enumerate(self.scores) if s["kind"] in kinds]
        return max(found, key=lambda f: f[0])[1] if found else None

    def claimed(self) -> dict | None:
        """{label, val_loss, val_bpb, eval_ms} of the score the run claims (the module doc's order), or None."""
        return self.best((ROUNDTRIP, SLIDING, TTT))

    def reported_claim(self) -> dict | None:
        """The claim as a reader is shown it: the artifact's score (claimed); in a log without one, its
        pre-quantisation score, labelled as such (module doc); None when the log has neither."""
        claim = self.claimed()
        if claim is not None:
            return claim
        line = self.best((PREQUANT,)) or (self.vals[-1] if self.vals else None)
        if line is None:
            return None
        return dict(label=PREQUANT_CLAIM.format(bpb=line["val_bpb"]), val_loss=line.get("val_loss"),
                    val_bpb=line["val_bpb"], eval_ms=None, kind=PREQUANT)

    def training_end(self) -> str | None:
        """How the log shows training reached its end, or None: a stop line (ours `stopped`, upstream
        `stopping_early: wallclock_cap`), or a step line at the run's own step cap (`step:N/N`)."""
        if self.get("stopped.step") is not None:
            return f"stopped at step {int(self.get('stopped.step'))}"
        if self.get("stopping_early.step") is not None:
            return f"wallclock stop at step {int(self.get('stopping_early.step'))}"
        last = max([r["step"] for r in self.steps + self.vals], default=None)
        if last is not None and last == self.step_cap:
            return f"last step {last}/{self.step_cap}"
        return None

    def claimed_score(self) -> tuple[float, float] | None:
        claim = self.claimed()
        return None if claim is None else (claim["val_loss"], claim["val_bpb"])

    def claimed_label(self) -> str | None:
        claim = self.claimed()
        return None if claim is None else claim["label"]

    def final_roundtrip(self) -> tuple[float, float] | None:
        """(val_loss, val_bpb) of the reloaded artifact, plain eval: ours `final_roundtrip`, upstream
        `final_<quant>_roundtrip[_exact]`, `quantized`, `diagnostic quantized`."""
        line = self.best((ROUNDTRIP,))
        return None if line is None else (line["val_loss"], line["val_bpb"])

    def roundtrip_bpb(self) -> float | None:
        final = self.final_roundtrip()
        return final[1] if final else None

    def ttt_bpb(self) -> float | None:
        """Ours: `final_ttt`. Upstream records: a `*ttt*` line such as `legal_ttt_exact`, `quantized_ttt_phased`."""
        line = self.best((TTT,))
        return None if line is None else line["val_bpb"]

    def sliding_bpb(self) -> float | None:
        line = self.best((SLIDING,))
        return None if line is None else line["val_bpb"]

    def final_step(self) -> int | None:
        """Steps trained: ours `stopped step:N`, upstream `stopping_early: .. step:N/M`, else the last step logged."""
        for key in ("stopped.step", "stopping_early.step"):
            if self.get(key) is not None:
                return int(self.get(key))
        return max([r["step"] for r in self.steps + self.vals], default=None)

    def size_fallback(self) -> tuple[int, int] | None:
        """(artifact bytes that did not fit, bytes rewritten without AWQ-lite's groups) when golf's SIZE_FALLBACK
        rewrote the run's artifact (its `size_fallback ...` line; golf/train.py fit_artifact), else None."""
        rewritten = self.get("size_fallback.rewritten_artifact_bytes")
        return None if rewritten is None else (int(self.get("size_fallback.artifact_bytes", 0)), int(rewritten))

    def prequant_bpb(self) -> float | None:
        """Ours: the `prequant` line; upstream: its pre-quantisation line (`pre-quantization post-ema`), else
        the last periodic val line (scored before quantising)."""
        line = self.best((PREQUANT,))
        if line is not None:
            return line["val_bpb"]
        return self.vals[-1]["val_bpb"] if self.vals else None

    def train_seconds(self) -> float | None:
        """Training wallclock: ours `stopped train_time`, upstream `stopping_early ... train_time`, else the
        last train_time on a step line."""
        for key in ("stopped.train_time", "stopping_early.train_time"):
            if self.get(key) is not None:
                return self.seconds(key)
        times = [r["train_time_ms"] for r in self.steps + self.vals if r.get("train_time_ms") is not None]
        return max(times) / 1000 if times else None

    def step_avg_ms(self) -> float | None:
        """The last step line's step_avg; logs without one (newer upstream): train time / steps."""
        if self.steps and self.steps[-1].get("step_avg_ms") is not None:
            return self.steps[-1]["step_avg_ms"]
        train_s, steps = self.train_seconds(), self.final_step()
        return train_s * 1000 / steps if train_s is not None and steps else None

    def eval_seconds(self) -> float | None:
        """Ours: `eval_time` (all of evaluation). Upstream: `total_eval_time` where logged, else the sum of
        the eval_time of its scored lines other than pre-quant and `diagnostic` ones (an `_exact` line right
        after its rounded twin is the same eval, counted once)."""
        for key in ("eval_time", "total_eval_time"):
            if self.get(key) is not None:
                return self.seconds(key)
        parts, previous = [], None
        for s in self.scores:
            twin = (previous is not None and s["label"] == previous["label"] + "_exact"
                    and previous["eval_ms"] is not None)
            if s["eval_ms"] is not None and not twin and s["kind"] != PREQUANT \
                    and "diagnostic" not in s["label"].lower():
                parts.append(s["eval_ms"])
            previous = s
        return sum(parts) / 1000 if parts else None


def line_values(line: str) -> dict[str, float]:
    return {k: float(v) for k, v, _ in KV.findall(line)}


def malformed_result(line: str) -> bool:
    """A result key (val_bpb, train_loss, ..._bytes) whose value is neither a number nor a plain word."""
    return any(RESULT_KEY.match(k) and not FULL_VALUE.fullmatch(v) for k, v in TOKEN_KV.findall(line))


def line_prefix(line: str) -> str:
    """The label of a scored or final line: the words before its first key:value.
    'final_roundtrip val_bpb:..' -> 'final_roundtrip'; 'diagnostic quantized val_loss:..' -> 'diagnostic quantized';
    'stopping_early: wallclock_cap ..' -> 'stopping_early'; '' when the line starts with key:value."""
    words = line.split()
    if len(words) > 1 and words[0].endswith(":") and words[0].count(":") == 1:
        return words[0][:-1]
    label = []
    for word in words:
        if ":" in word:
            return " ".join(label)
        label.append(word)
    return ""


def normalise(line: str) -> str:
    """One spelling for every generation: no epoch stamp, `key: value` -> `key:value`."""
    return SPACED_KV.sub(r"\1:", EPOCH_STAMP.sub("", line))


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
    if TORCH_WARNING.match(line):
        return
    raw = EPOCH_STAMP.sub("", line)
    for pattern, key in UPSTREAM_SIZES:
        m = pattern.match(raw)
        if m:
            summary.values[key] = float(m.group(1))
            summary.size_lines[key] = raw
            return
    line = normalise(line)
    if malformed_result(line):
        summary.unread.append(line)
        return
    seed = SEED_LINE.search(line)
    if seed and "seed" not in summary.meta:
        summary.meta["seed"] = seed.group(1) or seed.group(2)
    kvs = KV.findall(line)
    step = STEP.match(line + " ")
    if step:
        vals = {STEP_ALIASES.get(k, k): (float(v), unit) for k, v, unit in kvs}
        time = vals.get("train_time")
        row = dict(step=int(step.group(1)), train_time_ms=None if time is None else time[0] * TO_MS.get(time[1], 1.0))
        summary.step_cap = int(step.group(2))
        if "train_loss" in vals:
            avg = vals.get("step_avg")
            summary.steps.append(dict(row, train_loss=vals["train_loss"][0], step_avg_ms=avg and avg[0]))
        elif "val_bpb" in vals:
            summary.vals.append(dict(row, val_loss=vals.get("val_loss", (None,))[0], val_bpb=vals["val_bpb"][0]))
        elif kvs or line.startswith("step:"):
            summary.unread.append(line)  # a step line that is neither: cut short or garbled
        return
    prefix = line_prefix(line)
    for k, v, unit in kvs:
        key = f"{prefix}.{k}" if prefix else k
        summary.values[key] = float(v)
        if unit in TO_MS:
            summary.units[key] = unit
        if key == "code_bytes":
            summary.size_lines[key] = line
    vals = line_values(line)
    if "val_bpb" in vals and prefix:
        summary.finals.append((prefix, vals["val_bpb"]))
        eval_ms = summary.seconds(f"{prefix}.eval_time") if "eval_time" in vals else None
        kind = eval_kind(prefix)
        for earlier in summary.scores:  # a round-trip-named re-log of an earlier sliding / TTT score keeps its kind
            if kind == ROUNDTRIP and earlier["kind"] in (SLIDING, TTT) and "val_loss" in vals and \
                    (earlier["val_loss"], earlier["val_bpb"]) == (vals["val_loss"], vals["val_bpb"]):
                kind = earlier["kind"]
        summary.scores.append(dict(label=prefix, val_loss=vals.get("val_loss"), val_bpb=vals["val_bpb"],
                                   eval_ms=None if eval_ms is None else eval_ms * 1000, kind=kind))


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
