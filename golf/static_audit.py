"""Static legality audit of any train_gpt.py: the reviewers' checklist, read from the source with `ast`.

The audited file is never imported, run or exec'd. A self-extracting shim (a compressed literal that the file
decodes and execs: lzma/brotli/zlib/gzip/bz2 over base85/base64/ascii85 or over the raw bytes of a Latin-1 file's
string literal (tools/pack.py's form), or `exec(open(...).read())` of a sibling file) is unpacked by decoding the
literal here, and the source inside is audited; the report says so. Files are read in the encoding their coding line
declares (PEP 263), as Python reads them.

How val data is followed (a taint analysis over the AST, one summary per function, iterated to a fixpoint):
  sources   string constants naming val shards (`fineweb_val_*.bin`, a "val" split argument), names and
            attributes that name val data (`val_tokens`, `h.val_files`, `val_data`), calls to `load_val*`;
  flow      assignment, loops, comprehensions, container stores and in-place mutators (`buf[i] = x`,
            `acc += x`, `xs.append(x)`), calls (a local function's result carries the arguments that reach its
            return; an unknown call's result carries all of them); sizes (`len`, `.numel()`, `.shape`) stop it;
  sinks     `.backward()`, `torch.autograd.grad`, `.step(data)`, Hessian/GPTQ calibration (`X.T @ X`, calls
            named *hessian*/*calib*/*gptq*), and writes into persistent state (`.copy_`, `.data =`,
            `load_state_dict`, `register_buffer`); a local function whose sink is reached by a parameter is a
            sink at each call site that passes val data to that parameter.
Score-first: an update is legal when, in the body of a loop that encloses it, a statement before it scores the
same data under `no_grad`/`inference_mode` (a `with` block that calls or accumulates on it, a decorated function,
or a call to a function that does so); or when a function scores, then updates, and is called inside a loop (per
chunk). The update then only sees chunks already scored in that iteration or before. Not checked: which chunk an
index expression selects (an update on chunk i+1 inside the loop that scores chunk i passes).
Verdicts: FAIL where the pattern reaches the score; WARN where its effect may not: the updated state is reloaded
(`load_state_dict`) or the adapter it trained is deleted afterwards (a throwaway compile warm-up), or it sits under
`if FLAG:` whose default, read from the source (`os.environ.get("X", "0")`), is off.
"""

import ast
import base64
import bz2
import gzip
import io
import lzma
import re
import tokenize
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import brotli

VAL_NAME = re.compile(r"(^|_)val(idation)?_(tokens?|data|files?|ids|seqs?|stream|shards?|inputs?|targets?|batch(es)?"
                      r"|docs?|chunks?|set|split|x|y|loader|dataset|pattern|paths?)$|^(val|validation)(_?data|set)$",
                      re.IGNORECASE)
VAL_PATH = re.compile(r"(^|[_/\\])val(idation)?([_/\\.*]|$)", re.IGNORECASE)  # in a glob or path constant
VAL_LOADER = re.compile(r"^(load|read|get|make|build)_?(val|validation)", re.IGNORECASE)


def names_val_data(name: str) -> bool:
    """A bare name the audit takes for val data (`val_tokens`) or, called, for a val loader (`load_val_tokens`): a
    source by its name alone. tools/pack.py keeps such names when it renames the shipped file's globals, so the audit
    sees the same sources in the shipped file as in its readable twin."""
    return bool(VAL_NAME.search(name) or VAL_LOADER.match(name))


TRAIN_PATH = re.compile(r"(^|[_/\\])train([_/\\.*]|$)", re.IGNORECASE)
TRAIN_NAME = re.compile(r"^(train_(files|pattern|shards?|loader|stream|tokens)|train_data_(files|pattern))$", re.I)
TARGET_NAME = re.compile(r"^(y|ys|yb|tgt|tgts|target|targets|target_ids|labels?|next_tokens?|next_ids|y_batch"
                         r"|y_flat|y_true)$")
SCORE_WORD = re.compile(r"loss|bpb|nll|score|ppl|perplex", re.IGNORECASE)
EPOCH_WORD = re.compile(r"epoch|(^|_)ep($|_)|passes", re.IGNORECASE)
PROB_WORD = re.compile(r"softmax|prob|\bp_|_p\b|exp\(|dist", re.IGNORECASE)
NORMALISERS = ("softmax", "log_softmax", "logsumexp", "normalize")
SIZE_CALLS = {"len", "numel", "size", "dim", "nelement", "isinstance", "type", "id", "hasattr"}
SIZE_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad"}
MUTATORS = {"append", "extend", "insert", "add_", "copy_", "index_add_", "index_copy_", "index_put_", "scatter_",
            "scatter_add_", "put_", "update", "mul_", "sub_", "addcmul_", "lerp_", "fill_", "masked_scatter_"}
NO_GRAD = {"no_grad", "inference_mode"}
SCORER_CALL = re.compile(r"^(score|eval)", re.IGNORECASE)  # an undefined function by these names scores
TRAINER_CALL = re.compile(r"^(adapt|train|fit|finetune)(_|$)|^train_step$", re.IGNORECASE)  # ... or updates
NETWORK_MODULES = ("urllib", "requests", "huggingface_hub", "socket", "http.client", "httpx", "aiohttp", "ftplib",
                   "urllib3", "datasets")
NETWORK_CALLS = {"urlopen", "urlretrieve", "hf_hub_download", "snapshot_download", "create_connection",
                 "load_dataset"}
# A str literal's characters are taken as Latin-1 bytes; "raw" is a literal holding the compressed bytes themselves.
DECODERS = (("base85", base64.b85decode), ("base64", base64.b64decode), ("ascii85", base64.a85decode),
            ("raw", lambda b: b))
RAW_LZMA2 = [{"id": lzma.FILTER_LZMA2}]  # what `lzma.compress(..., format=FORMAT_RAW)` shims use
DECOMPRESSORS = (("lzma", lzma.decompress),
                 ("lzma2-raw", lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=RAW_LZMA2)),
                 ("brotli", brotli.decompress), ("zlib", zlib.decompress),
                 ("gzip", gzip.decompress), ("bz2", bz2.decompress), ("deflate", lambda b: zlib.decompress(b, -15)))

CHECKS = (
    ("val_update", "static: val data reaches no update outside score-first"),
    ("epochs", "static: no epoch loop over val with updates"),
    ("best_of", "static: no best-of over scored passes"),
    ("target_key", "static: n-gram/hash tables keyed on a target only after it is scored"),
    ("mixture", "static: probability mixtures renormalised over the vocabulary"),
    ("eval_io", "static: eval path touches no train shards or network"),
)
RANK = {"PASS": 0, "WARN": 1, "FAIL": 2}


class AuditInputError(Exception):
    """The file cannot be read as Python, or it execs code that cannot be decoded statically."""


@dataclass
class Unit:
    """One piece of source that is audited: the file itself, or the code decoded from a literal in it."""
    text: str
    origin: str  # "FILE" or "lzma+base85 literal at FILE line 2"
    tree: ast.Module


@dataclass
class Finding:
    check: str
    verdict: str  # PASS (a recognised legal pattern), WARN, FAIL
    unit: str
    line: int
    message: str
    path: list[str] = field(default_factory=list)  # how val data got there, source first

    def as_dict(self) -> dict:
        return dict(check=self.check, verdict=self.verdict, source=self.unit, line=self.line, message=self.message,
                    taint_path=self.path)


# ---------------------------------------------------------------- unpacking shims
def load_units(path: Path) -> list[Unit]:
    """The file's source and every payload it decodes and execs, innermost last. Raises AuditInputError."""
    units: list[Unit] = []
    _add_unit(units, read_source(path), str(path), path, depth=0)
    return units


def read_source(path: Path) -> str:
    """The text of a Python file in the encoding its coding line declares (UTF-8 without one). Raises
    AuditInputError."""
    try:
        data = path.read_bytes()
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        raise AuditInputError(f"{path}: cannot read as Python source text ({e})") from None


def parse_source(text: str) -> tuple[ast.Module, int]:
    """The module, and how many Python 3.12 f-strings (same quote nested inside a field) were rewritten so that
    an older parser reads them; line numbers are unchanged. Raises SyntaxError."""
    repaired = 0
    while True:
        try:
            return ast.parse(text), repaired
        except SyntaxError as e:
            if "f-string" not in str(e.msg) or not e.lineno or repaired > 500:
                raise
            lines = text.split("\n")
            fixed = requote_fstrings(lines[e.lineno - 1])
            if fixed == lines[e.lineno - 1]:
                raise
            lines[e.lineno - 1] = fixed
            text = "\n".join(lines)
            repaired += 1


def requote_fstrings(line: str) -> str:
    """Inside the {fields} of each f-string on line, swap the string's own quote for the other kind."""
    out, i = [], 0
    while i < len(line):
        m = re.compile(r"(?<![\w])[rRbBuU]?[fF][rR]?(['\"])").match(line, i) if line[i] in "fFrRbBuU" else None
        if not m or (i > 0 and (line[i - 1].isalnum() or line[i - 1] == "_")):
            out.append(line[i])
            i += 1
            continue
        quote, other = m.group(1), "'" if m.group(1) == '"' else '"'
        out.append(m.group(0))
        i, depth = m.end(), 0
        while i < len(line):
            c = line[i]
            if c == "{":
                depth = depth + 1 if not (depth == 0 and line[i + 1: i + 2] == "{") else depth
            elif c == "}" and depth > 0:
                depth -= 1
            elif c == quote and depth == 0:
                out.append(c)
                i += 1
                break
            out.append(other if c == quote and depth > 0 else c)
            i += 1
    return "".join(out)


def _add_unit(units: list[Unit], text: str, origin: str, path: Path, depth: int) -> None:
    try:
        tree, repaired = parse_source(text)
    except SyntaxError as e:
        raise AuditInputError(f"{origin}: not valid Python (line {e.lineno}: {e.msg})") from None
    if repaired:
        origin += f" ({repaired} Python 3.12 f-string(s) re-quoted to parse)"
    units.append(Unit(text, origin, tree))
    if depth > 3:
        return
    decoded_any, undecoded = False, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and len(node.value) >= 200:
            found = decode_payload(node.value)
            if found:
                how, inner = found
                decoded_any = True
                _add_unit(units, inner, f"{how} literal at {origin} line {node.lineno}", path, depth + 1)
            else:
                undecoded.append(node)
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and called_name(n) in ("exec", "eval")):
        target = exec_of_file(call, path)
        if target is not None:
            if not target.is_file():
                raise AuditInputError(f"{origin}: exec() at line {call.lineno} runs {target.name}, which is not "
                                      f"beside the file; audit that file")
            _add_unit(units, read_source(target),
                      f"{target.name} (exec(open(...).read()) at {origin} line {call.lineno})", path, depth + 1)
        elif not decoded_any and call.args and not isinstance(call.args[0], ast.Constant):
            longest = max(undecoded, key=lambda n: len(n.value), default=None)
            why = "" if longest is None else (f"; the {len(longest.value):,}-character literal at line {longest.lineno} "
                                              "is no payload this audit can decode (corrupt, or an unknown format)")
            raise AuditInputError(f"{origin}: exec() at line {call.lineno} runs code that could not be decoded "
                                  f"statically ({ast.unparse(call)[:60]}...){why}")


def decode_payload(value: str | bytes) -> tuple[str, str] | None:
    """(how, source) when value is a compressed, text-encoded Python source; None otherwise."""
    data = value.encode("latin-1", "ignore") if isinstance(value, str) else value
    for dname, decode in DECODERS:
        try:
            raw = decode(data)
        except Exception:
            continue
        for cname, decompress in DECOMPRESSORS:
            try:
                source = decompress(raw).decode("utf-8")
                parse_source(source)
            except Exception:
                continue
            return f"{cname}+{'latin-1' if dname == 'raw' and isinstance(value, str) else dname}", source
    return None


def exec_of_file(call: ast.Call, path: Path) -> Path | None:
    """The file run by exec(open(P).read()) where P is a constant or __file__.replace(a, b); else None."""
    arg = call.args[0] if call.args else None
    if not (isinstance(arg, ast.Call) and called_name(arg) == "read" and isinstance(arg.func, ast.Attribute)):
        return None
    opened = arg.func.value
    if not (isinstance(opened, ast.Call) and called_name(opened) == "open" and opened.args):
        return None
    p = opened.args[0]
    if isinstance(p, ast.Constant) and isinstance(p.value, str):
        return path.parent / p.value
    if (isinstance(p, ast.Call) and called_name(p) == "replace" and isinstance(p.func, ast.Attribute)
            and isinstance(p.func.value, ast.Name) and p.func.value.id == "__file__" and len(p.args) == 2
            and all(isinstance(a, ast.Constant) for a in p.args)):
        return Path(str(path).replace(p.args[0].value, p.args[1].value))
    return None


# ---------------------------------------------------------------- small AST helpers
def called_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def dotted(node: ast.AST) -> str | None:
    """'a.b.c' for a chain of attributes on a name; None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id] + parts[::-1])
    return None


def short(node: ast.AST, n: int = 70) -> str:
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= n else text[: n - 3] + "..."


def is_no_grad(expr: ast.AST) -> bool:
    """torch.no_grad() / torch.inference_mode() / set_grad_enabled(False), called or bare (as a decorator)."""
    call = expr if isinstance(expr, ast.Call) else None
    name = called_name(call) if call else (expr.attr if isinstance(expr, ast.Attribute) else
                                          expr.id if isinstance(expr, ast.Name) else "")
    if name in NO_GRAD:
        return not (call and call.args and isinstance(call.args[0], ast.Constant) and call.args[0].value is False)
    return name == "set_grad_enabled" and bool(call and call.args) and isinstance(call.args[0], ast.Constant) \
        and call.args[0].value is False


DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
LOOPS = (ast.For, ast.AsyncFor, ast.While)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def param_names(fn: ast.AST) -> list[str]:
    a = fn.args
    return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]


def scope_bindings(scope) -> tuple[set[str], set[str]]:
    """(the names a function or module body binds, the names it declares global): parameters, assignment and loop
    targets, imports, `except ... as`, nested defs and classes; comprehension variables stay in the comprehension."""
    bound, declared = set(scope.params), set()
    nodes = own_nodes(scope.node)
    inner = {id(t) for n in nodes if isinstance(n, COMPREHENSIONS) for g in n.generators for t in ast.walk(g.target)}
    for node in nodes:
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) and id(node) not in inner:
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
    for parent in [scope.node] + nodes:  # defs and classes are the children own_nodes does not enter
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, DEFS + (ast.ClassDef,)):
                bound.add(child.name)
    return bound - declared, declared


_OWN_NODES: dict = {}  # id(s) of the nodes -> (the nodes, kept alive so ids stay unique, the walk)


def own_nodes(fn) -> list[ast.AST]:
    """Nodes of a function (or module) body, or of a list of statements, not descending into nested defs, classes
    and lambdas. Cached: the analysis walks the same bodies once per fixpoint round."""
    items = fn if isinstance(fn, list) else fn.body
    key = tuple(map(id, items))
    hit = _OWN_NODES.get(key)
    if hit is not None:
        return hit[1]
    skip = DEFS + (ast.ClassDef, ast.Lambda)
    out, stack = [], [n for n in items if not isinstance(n, skip)]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(c for c in ast.iter_child_nodes(node) if not isinstance(c, skip))
    _OWN_NODES[key] = (list(items), out)
    return out


# ---------------------------------------------------------------- the taint analysis
@dataclass
class Update:
    """A write of data into something that persists (weights via backward/step, Hessians, buffers)."""
    kind: str  # backward, step, hessian, state
    line: int
    expr: str
    labels: frozenset
    chain: list[str]  # evidence inside the callee(s), innermost last
    epoch_line: int = 0  # line of an enclosing epoch loop (in the function where it was found), 0 if none
    sink_line: int = 0  # line of the sink itself (inside the callee, for a call that reaches one)
    sink_expr: str = ""
    restored_line: int = 0  # a load_state_dict() after it, in the function it was found in
    scored_after: tuple = ()  # (score line, loop line) when the loop scores the same data only after it
    guard: str = ""  # an enclosing `if FLAG:` whose flag is off by default (env var default read from the source)
    scored_in_callee: int = 0  # line where the callee scores this data before the update (no loop there)

    def __post_init__(self):
        self.sink_line = self.sink_line or self.line
        self.sink_expr = self.sink_expr or self.expr

    def where(self) -> str:
        """'loss.backward() at line 30', with the call that reaches it when that is another line."""
        via = f", reached by {self.expr} at line {self.line}" if self.sink_line != self.line else ""
        return f"{self.sink_expr} at line {self.sink_line}{via}"


@dataclass
class Summary:
    returns: frozenset = frozenset()  # labels reaching a return: "VAL", "P<i>"
    scores: frozenset = frozenset()  # labels read under no_grad (params the function scores)
    escapes: tuple = ()  # Updates on parameter labels, not covered by a score-first loop in the function
    covered: frozenset = frozenset()  # parameter labels updated inside a score-first loop


@dataclass
class Scope:
    """One function (or the module body) with its resolved names."""
    name: str
    node: ast.AST
    params: list[str]
    parent: "Scope | None"
    direct_callers: int = 0
    val_params: set = field(default_factory=set)  # indices of parameters some call site passes val data to
    env: dict = field(default_factory=dict)  # name or dotted path -> labels
    why: dict = field(default_factory=dict)  # name -> (line, rhs text, first tainted name in rhs)
    defs: dict = field(default_factory=dict)  # name -> the functions defined directly in this scope
    binds: set = field(default_factory=set)  # every other name this scope binds (a call to it reaches no def)
    declared_global: set = field(default_factory=set)


class Analysis:
    def __init__(self, unit: Unit):
        self.unit = unit
        self.tree = unit.tree
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.scopes: list[Scope] = []
        self.by_node: dict[int, Scope] = {}
        self.methods: dict[str, list[Scope]] = {}
        module = Scope("<module>", self.tree, [], None)
        self.scopes.append(module)
        self._collect(self.tree, module, in_class=False)
        self.module = module
        for s in self.scopes:
            self.by_node[id(s.node)] = s
            s.binds, s.declared_global = scope_bindings(s)
            s.binds -= set(s.defs)
        self.summaries: dict[int, Summary] = {id(s): Summary() for s in self.scopes}
        self.net_aliases = network_aliases(self.tree)

    def _collect(self, node: ast.AST, scope: Scope, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, DEFS):
                s = Scope(child.name, child, param_names(child), scope)
                self.scopes.append(s)
                (self.methods if in_class else scope.defs).setdefault(child.name, []).append(s)
                self._collect(child, s, in_class=False)
            elif isinstance(child, ast.ClassDef):
                self._collect(child, scope, in_class=True)
            else:
                self._collect(child, scope, in_class)

    # ---- resolving calls to local functions
    def enclosing(self, node: ast.AST) -> Scope:
        """The function (or the module) whose body holds node (a def's decorators and defaults are outside it)."""
        while node is not self.tree:
            child, node = node, self.parents[node]
            if isinstance(node, DEFS) and child in node.body:
                return self.by_node[id(node)]
        return self.module

    def resolve(self, call: ast.Call) -> list[tuple[Scope, int]]:
        """Local functions a call may reach, each with the offset of argument 0 among its parameters. A called name
        is looked up as Python does, innermost enclosing function first: a def elsewhere with the same name (a nested
        helper of another function, as short minified names often are) is not what the call reaches."""
        f = call.func
        if isinstance(f, ast.Name):
            s = self.enclosing(call)
            while s is not None:
                if f.id in s.declared_global:
                    s = self.module
                if f.id in s.defs:
                    return [(d, 0) for d in s.defs[f.id]]
                if f.id in s.binds:
                    return []
                s = s.parent
            return []
        if isinstance(f, ast.Attribute):  # obj.meth(...): the one class method by that name, self as argument 0
            cands = self.methods.get(f.attr, [])
            if len(cands) == 1 and not f.attr.startswith("__"):
                return [(cands[0], 1)]
        return []

    def arg_for_param(self, call: ast.Call, callee: Scope, offset: int, i: int) -> ast.AST | None:
        name = callee.params[i] if i < len(callee.params) else None
        for kw in call.keywords:
            if kw.arg == name:
                return kw.value
        j = i - offset
        if 0 <= j < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[: j + 1]):
            return call.args[j]
        if offset == 1 and i == 0 and isinstance(call.func, ast.Attribute):
            return call.func.value
        return None

    # ---- labels of an expression
    def labels(self, node: ast.AST, scope: Scope) -> frozenset:
        if node is None:
            return frozenset()
        if isinstance(node, ast.Name):
            return self.name_labels(node.id, scope)
        if isinstance(node, ast.Attribute):
            if node.attr in SIZE_ATTRS:
                return frozenset()
            if VAL_NAME.search(node.attr):
                return frozenset({"VAL"}) | self.labels(node.value, scope)
            path = dotted(node)
            own = self.lookup(path, scope) if path else frozenset()
            return own | self.labels(node.value, scope)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and VAL_PATH.search(node.value) and \
                    re.search(r"[*/\\]|\.(bin|npy|pt)$", node.value):
                return frozenset({"VAL"})
            return frozenset()
        if isinstance(node, ast.JoinedStr):
            return frozenset().union(*(self.labels(v.value, scope) for v in node.values
                                       if isinstance(v, ast.FormattedValue)))
        if isinstance(node, ast.Call):
            return self.call_labels(node, scope)
        if isinstance(node, ast.Lambda):
            return frozenset()
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            out = frozenset()
            for g in node.generators:
                out |= self.labels(g.iter, scope)
            elts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            return out | frozenset().union(*(self.labels(e, scope) for e in elts))
        if isinstance(node, ast.Subscript):
            out = self.labels(node.value, scope)  # a slice's bounds select data, they are not data
            if not isinstance(node.slice, ast.Slice) and not (isinstance(node.slice, ast.Tuple) and any(
                    isinstance(e, ast.Slice) for e in node.slice.elts)):
                out |= self.labels(node.slice, scope)  # a gather: lut[tokens] carries the tokens
            if data_labels(out) and is_next_token_slice(node.slice):
                out |= {"TGT"}
            return out
        return frozenset().union(*(self.labels(c, scope) for c in ast.iter_child_nodes(node)
                                   if isinstance(c, ast.expr)), frozenset())

    def relevant(self, labs: frozenset, scope: Scope) -> frozenset:
        """The labels that mean val data in scope: VAL, and the parameters that call sites pass val data to."""
        return frozenset(l for l in labs if l == "VAL" or (l.startswith("P") and int(l[1:]) in scope.val_params))

    def mark_val_params(self) -> bool:
        changed = False
        for s in self.scopes:
            for node in own_nodes(s.node):
                if isinstance(node, ast.Call):
                    for callee, offset in self.resolve(node):
                        for i in range(len(callee.params)):
                            if i not in callee.val_params and self.relevant(
                                    self.labels(self.arg_for_param(node, callee, offset, i), s), s):
                                callee.val_params.add(i)
                                changed = True
        return changed

    def data(self, node: ast.AST, scope: Scope) -> frozenset:
        """The val and parameter labels of node: what counts as data for the sinks."""
        return data_labels(self.labels(node, scope))

    def name_labels(self, name: str, scope: Scope) -> frozenset:
        out = self.lookup(name, scope)
        if TARGET_NAME.match(name):
            out |= {"TGT"}
        return out

    def lookup(self, key: str, scope: Scope) -> frozenset:
        s = scope
        while s is not None:
            if key in s.env:
                return s.env[key]
            if key in s.params:
                return s.env.get(key, frozenset())
            s = s.parent
        if "." not in key and VAL_NAME.search(key):
            return frozenset({"VAL"})
        return frozenset()

    def call_labels(self, call: ast.Call, scope: Scope) -> frozenset:
        name = called_name(call)
        if name in SIZE_CALLS:
            return frozenset()
        args = list(call.args) + [k.value for k in call.keywords]
        if VAL_LOADER.match(name) or any(isinstance(a, ast.Constant) and a.value in ("val", "validation")
                                         for a in args):
            return frozenset({"VAL"})
        callees = self.resolve(call)
        if callees:
            out = frozenset()
            for callee, offset in callees:
                summ = self.summaries[id(callee)]
                out |= summ.returns & {"VAL", "TGT"}
                for lab in summ.returns:
                    if lab.startswith("P"):
                        arg = self.arg_for_param(call, callee, offset, int(lab[1:]))
                        out |= self.labels(arg, scope)
            return out
        out = frozenset().union(*(self.labels(a, scope) for a in args), frozenset())
        if isinstance(call.func, ast.Attribute):
            out |= self.labels(call.func.value, scope)
        return out

    # ---- one pass over a scope: propagate labels to a fixpoint inside it
    def propagate(self, scope: Scope) -> None:
        if scope.node is not self.tree:
            for i, p in enumerate(scope.params):
                base = {f"P{i}"}
                if scope.direct_callers == 0 and VAL_NAME.search(p):
                    base.add("VAL")  # never called by name (a callback or entry point): trust the name
                scope.env[p] = frozenset(base) | scope.env.get(p, frozenset())
        nodes = list(own_nodes(scope.node))
        for _ in range(8):
            changed = False
            for node in nodes:
                for target, value in assignments(node):
                    labs = self.labels(value, scope)
                    if labs:
                        changed |= self.bind(target, labs, scope, node)
            if not changed:
                return

    def bind(self, target: ast.AST, labs: frozenset, scope: Scope, node: ast.AST) -> bool:
        keys = target_keys_of(target)
        changed = False
        for k in keys:
            if k is None:
                continue
            old = scope.env.get(k, frozenset())
            if not labs <= old:
                scope.env[k] = old | labs
                if k not in scope.why:
                    src = next((n for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute))
                                and n is not target and self.data(n, scope)), None)
                    scope.why[k] = (getattr(node, "lineno", 0), short(node, 60), dotted(src) if src is not None
                                    else None)
                changed = True
        return changed

    def taint_path(self, expr: ast.AST, scope: Scope) -> list[str]:
        """Source first: how val data reached expr, following the first tainted name back through assignments."""
        start = next((n for n in ast.walk(expr) if isinstance(n, (ast.Name, ast.Attribute))
                      and self.data(n, scope)), None)
        path, key, seen = [], dotted(start) if start is not None else None, set()
        while key and key not in seen:
            seen.add(key)
            s, found = scope, None
            while s is not None and found is None:
                found = s.why.get(key)
                s = s.parent
            if found is None:
                why = "a parameter" if key.split(".")[0] in scope.params else "named as val data"
                path.append(f"{key} ({why})")
                break
            line, text, nxt = found
            path.append(f"{key} <- line {line}: {text}")
            key = nxt
        return path[::-1]


def data_labels(labs: frozenset) -> frozenset:
    return frozenset(l for l in labs if l == "VAL" or l.startswith("P"))


def target_keys_of(target: ast.AST) -> list[str]:
    """Names and dotted paths an assignment target binds; a subscript store binds its container."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [k for t in target.elts for k in target_keys_of(t)]
    if isinstance(target, ast.Starred):
        return target_keys_of(target.value)
    while isinstance(target, ast.Subscript):
        target = target.value
    key = dotted(target) if isinstance(target, (ast.Attribute, ast.Name)) else None
    return [key] if key else []


def is_next_token_slice(sl: ast.AST) -> bool:
    """tokens[1:], tokens[..., 1:], tokens[i + 1]: the targets of a token stream."""
    parts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
    last = parts[-1]
    if isinstance(last, ast.Slice):
        return isinstance(last.lower, ast.Constant) and last.lower.value == 1 and last.upper is None
    return isinstance(last, ast.BinOp) and isinstance(last.op, ast.Add) and \
        isinstance(last.right, ast.Constant) and last.right.value == 1


def assignments(node: ast.AST):
    """(target, value) pairs that node binds or mutates."""
    if isinstance(node, ast.Assign):
        for t in node.targets:
            yield t, node.value
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
        yield node.target, node.value
    elif isinstance(node, (ast.For, ast.AsyncFor)):
        yield node.target, node.iter
    elif isinstance(node, ast.comprehension):
        yield node.target, node.iter
    elif isinstance(node, ast.withitem) and node.optional_vars is not None:
        yield node.optional_vars, node.context_expr
    elif isinstance(node, ast.NamedExpr):
        yield node.target, node.value
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
        receiver = node.func.value
        while isinstance(receiver, ast.Subscript):
            receiver = receiver.value
        if isinstance(receiver, (ast.Name, ast.Attribute)):
            for a in list(node.args) + [k.value for k in node.keywords]:
                yield receiver, a


# ---------------------------------------------------------------- structure: scoring regions and updates
class Structure:
    """Score-first structure of one scope, evaluated on the final labels."""

    def __init__(self, an: Analysis, scope: Scope):
        self.an, self.scope = an, scope

    def scoring_labels(self, stmt: ast.AST) -> list[tuple[int, frozenset]]:
        """(line, data labels) of every scoring region inside stmt: a no_grad/inference_mode block that calls
        something on the data (a forward, a loss) or accumulates it, or a call to a function that scores its
        argument."""
        out = []
        for node in own_nodes([stmt]):
            if isinstance(node, (ast.With, ast.AsyncWith)) and any(is_no_grad(i.context_expr) for i in node.items):
                labs = frozenset()
                for n in own_nodes(node.body):
                    if isinstance(n, ast.Call):  # its arguments and, for a method, its receiver
                        for a in list(n.args) + [k.value for k in n.keywords] + (
                                [n.func.value] if isinstance(n.func, ast.Attribute) else []):
                            labs |= self.an.data(a, self.scope)
                    elif isinstance(n, ast.AugAssign):  # loss_sum += nll
                        labs |= self.an.data(n.value, self.scope)
                if labs:
                    out.append((node.lineno, labs))
            elif isinstance(node, ast.Call):
                labs = self.call_scores(node)
                if not labs and SCORER_CALL.match(called_name(node)) and not self.an.resolve(node):
                    labs = frozenset().union(*(self.an.data(a, self.scope) for a in node.args), frozenset())
                if labs:
                    out.append((node.lineno, labs))
        return out

    def call_scores(self, call: ast.Call) -> frozenset:
        out = frozenset()
        for callee, offset in self.an.resolve(call):
            for lab in self.an.summaries[id(callee)].scores:
                if lab.startswith("P"):
                    out |= self.an.data(self.an.arg_for_param(call, callee, offset, int(lab[1:])), self.scope)
                elif lab == "VAL":
                    out |= {"VAL"}
        return out

    def updates(self) -> list[tuple[ast.AST, Update]]:
        """Every update in the scope whose data carries val or parameter labels: (node, Update)."""
        an, scope, out = self.an, self.scope, []
        for node in own_nodes(self.scope.node):
            if isinstance(node, ast.Call):
                name = called_name(node)
                f = node.func
                recv = f.value if isinstance(f, ast.Attribute) else None
                if name == "backward" and recv is not None:
                    labs = an.data(recv, scope)
                    if labs:
                        out.append((node, Update("backward", node.lineno, short(node), labs, [])))
                elif name == "grad" and recv is not None and dotted(recv) in ("torch.autograd", "autograd") \
                        and node.args:
                    labs = an.data(node.args[0], scope)
                    if labs:
                        out.append((node, Update("backward", node.lineno, short(node), labs, [])))
                elif re.search(r"hessian|calib|gptq", name, re.I):
                    labs = frozenset().union(*(an.data(a, scope) for a in node.args), frozenset())
                    if labs:
                        out.append((node, Update("hessian", node.lineno, short(node), labs, [])))
                elif (name == "step" or TRAINER_CALL.match(name)) and not an.resolve(node) and node.args:
                    labs = frozenset().union(*(an.data(a, scope) for a in node.args), frozenset())
                    if labs:
                        out.append((node, Update("step", node.lineno, short(node), labs, [])))
                elif name in ("copy_", "load_state_dict", "register_buffer") and node.args and \
                        (name != "copy_" or isinstance(recv, ast.Attribute)):
                    labs = an.data(node.args[-1], scope)
                    if labs:
                        out.append((node, Update("state", node.lineno, short(node), labs, [])))
                for callee, offset in an.resolve(node):
                    for esc in an.summaries[id(callee)].escapes:
                        labs = frozenset()
                        for lab in esc.labels:
                            if lab.startswith("P"):
                                labs |= an.data(an.arg_for_param(node, callee, offset, int(lab[1:])), scope)
                        if labs:
                            chain = esc.chain + [f"{callee.name}() line {esc.line}: {esc.expr}"]
                            out.append((node, replace(esc, line=node.lineno, expr=short(node), labels=labs,
                                                      chain=chain)))
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult) and is_transpose_of(node):
                labs = an.data(node.right, scope)
                if labs:
                    out.append((node, Update("hessian", node.lineno, short(node), labs, [])))
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == "data"
                                                      for t in node.targets):
                labs = an.data(node.value, scope)
                if labs:
                    out.append((node, Update("state", node.lineno, short(node), labs, [])))
        return out

    def ancestors(self, node: ast.AST) -> list[ast.AST]:
        """Statements and blocks from node up to (not including) the scope node, innermost first."""
        out, n = [], node
        while n is not None and n is not self.scope.node:
            out.append(n)
            n = self.an.parents.get(n)
        return out

    def coverage(self, node: ast.AST, up: Update):
        """How the update at node stands against score-first, as (how, score line, loop):
        'covered': a statement before it in the body of an enclosing loop scores the same data;
        'before':  the loop scores that data only after the update (adapts, then scores);
        'self':    no loop, but the function scores the data before updating on it: legal per call, so it is
                   decided at the call sites (covered when the call is inside a loop);
        'none':    nothing scores that data around it."""
        labs, chain, after = up.labels, self.ancestors(node), None
        loops = [a for a in chain if isinstance(a, LOOPS + COMPREHENSIONS)]
        if up.scored_in_callee and loops:  # a call per chunk of a function that scores, then updates
            return "covered", up.scored_in_callee, loops[0]
        for i, anc in enumerate(chain):
            if not isinstance(anc, LOOPS) or i == 0:
                continue
            body = anc.body if chain[i - 1] in anc.body else anc.orelse
            if chain[i - 1] not in body:
                continue
            k = body.index(chain[i - 1])
            for line in self.scores_of(body[:k], labs):
                return "covered", line, anc
            if after is None:
                after = next(((line, anc) for line in self.scores_of(body[k + 1:], labs)), None)
        if after is not None:
            return "before", after[0], after[1]
        body = getattr(self.scope.node, "body", [])
        if isinstance(self.scope.node, DEFS) and chain and chain[-1] in body:
            for line in self.scores_of(body[: body.index(chain[-1])], labs):
                return "self", line, None
        return "none", 0, None

    def scores_of(self, stmts: list[ast.AST], labs: frozenset):
        """Lines of the scoring regions in stmts that read data among labs."""
        for stmt in stmts:
            for line, s_labs in self.scoring_labels(stmt):
                if self.an.relevant(s_labs & labs, self.scope):
                    yield line

    def loops_of(self, node: ast.AST) -> list[ast.AST]:
        return [a for a in self.ancestors(node) if isinstance(a, LOOPS)]

    def epoch_loop(self, node: ast.AST) -> ast.AST | None:
        """The innermost loop enclosing node that reads as an epoch loop."""
        for loop in self.loops_of(node):
            head = ast.unparse(loop.target) + " " + ast.unparse(loop.iter) if isinstance(loop, ast.For) \
                else ast.unparse(loop.test)
            if EPOCH_WORD.search(head):
                return loop
        return None

    def off_by_default(self, node: ast.AST) -> str:
        """'off by default: if use_slot (line 486), SLOT_ENABLED='0'' when an enclosing if's flag defaults off."""
        chain = self.ancestors(node)
        for i, anc in enumerate(chain):
            if isinstance(anc, ast.If) and i > 0 and chain[i - 1] in anc.body:
                tests = anc.test.values if isinstance(anc.test, ast.BoolOp) and isinstance(anc.test.op, ast.And) \
                    else [anc.test]
                for t in tests:
                    flag = self.flag_default(t, 0)
                    if flag is not None and not flag[1]:
                        return f"off by default: if {short(anc.test, 40)} (line {anc.lineno}), {flag[0]}"
        return ""

    def flag_default(self, expr: ast.AST, depth: int) -> tuple[str, bool] | None:
        """(how it was read, truth) of a config flag's default: env var defaults, getattr defaults, constants."""
        if depth > 6:
            return None
        if isinstance(expr, ast.Constant):
            return repr(expr.value), bool(expr.value) and expr.value not in ("0", "false", "False")
        if isinstance(expr, ast.Call):
            name = called_name(expr)
            if name in ("bool", "int", "float", "str") and len(expr.args) == 1:
                inner = self.flag_default(expr.args[0], depth + 1)
                if inner and name in ("bool", "int"):
                    return inner[0], inner[1] and inner[0].strip("'\"") not in ("0", "")
                return inner
            if name in ("get", "getenv") and len(expr.args) == 2 and isinstance(expr.args[0], ast.Constant) and \
                    isinstance(expr.args[1], ast.Constant) and "environ" in ast.unparse(expr.func) + name:
                return f"{expr.args[0].value}={expr.args[1].value!r}", expr.args[1].value not in ("0", "", "false")
            if name == "getattr" and len(expr.args) == 3 and isinstance(expr.args[1], ast.Constant):
                return self.flag_default(ast.Attribute(value=expr.args[0], attr=expr.args[1].value), depth + 1) \
                    or self.flag_default(expr.args[2], depth + 1)
            return None
        if isinstance(expr, ast.Compare) and len(expr.ops) == 1 and isinstance(expr.ops[0], ast.Eq) and \
                isinstance(expr.comparators[0], ast.Constant):
            left = expr.left
            if isinstance(left, ast.Call) and called_name(left) in ("get", "getenv") and len(left.args) == 2 and \
                    isinstance(left.args[1], ast.Constant) and isinstance(left.args[0], ast.Constant):
                return (f"{left.args[0].value}={left.args[1].value!r}",
                        left.args[1].value == expr.comparators[0].value)
            return None
        name = expr.id if isinstance(expr, ast.Name) else expr.attr if isinstance(expr, ast.Attribute) else None
        if name is None:
            return None
        scopes = [self.scope.node] if isinstance(expr, ast.Name) else []
        for where in scopes + [self.an.tree]:
            for n in (own_nodes(where) if where is not self.an.tree else ast.walk(where)):
                if isinstance(n, ast.Assign) and len(n.targets) == 1:
                    t = n.targets[0]
                    if (isinstance(t, ast.Name) and t.id == name) or (isinstance(t, ast.Attribute) and t.attr == name
                                                                       and not isinstance(expr, ast.Name)):
                        return self.flag_default(n.value, depth + 1)
        return None

    def restored_after(self, node: ast.AST) -> int:
        """Line where the update's effect is thrown away, or 0: a load_state_dict() after the statement holding node,
        or a `del` of the object whose .parameters() the optimiser stepped (a throwaway adapter, as in a compile
        warm-up)."""
        top = self.ancestors(node)[-1]
        body = self.scope.node.body
        if top not in body:
            return 0
        later = [n for stmt in body[body.index(top):] for n in ast.walk(stmt) if getattr(n, "lineno", 0) > node.lineno]
        reload = [n.lineno for n in later if isinstance(n, ast.Call) and called_name(n) == "load_state_dict"]
        if reload:
            return reload[0]
        nodes = own_nodes(self.scope.node)
        stepped = {n.func.value.id for n in nodes if isinstance(n, ast.Call) and called_name(n) == "step"
                   and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)}
        owners = {p.func.value.id for n in nodes if isinstance(n, ast.Assign) and len(n.targets) == 1
                  and isinstance(n.targets[0], ast.Name) and n.targets[0].id in stepped
                  for p in ast.walk(n.value) if isinstance(p, ast.Call) and called_name(p) == "parameters"
                  and isinstance(p.func, ast.Attribute) and isinstance(p.func.value, ast.Name)}
        dels = [n.lineno for n in later if isinstance(n, ast.Delete)
                and any(isinstance(t, ast.Name) and t.id in owners for t in n.targets)]
        return dels[0] if dels else 0


def sink_operand(node: ast.AST, up: Update) -> ast.AST:
    """What the taint path is traced from: the loss of a .backward(), else the whole call."""
    if up.kind == "backward" and isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not up.chain:
        return node.func.value
    return node


def is_transpose_of(mm: ast.BinOp) -> bool:
    """X.T @ X or X.t() @ X (a Hessian/Gram accumulation) with the same X."""
    left = mm.left
    base = left.value if isinstance(left, ast.Attribute) and left.attr in ("T", "mT") else \
        left.func.value if isinstance(left, ast.Call) and called_name(left) in ("t", "transpose") and \
        isinstance(left.func, ast.Attribute) else None
    return base is not None and ast.dump(base) == ast.dump(mm.right)


# ---------------------------------------------------------------- driving the analysis
def analyse(unit: Unit) -> Analysis:
    an = Analysis(unit)
    for s in an.scopes:
        for node in own_nodes(s.node):
            if isinstance(node, ast.Call):
                for callee, _ in an.resolve(node):
                    callee.direct_callers += 1
    for _ in range(12):
        before = {k: (v.returns, v.scores, tuple((e.kind, e.line, e.labels) for e in v.escapes), v.covered)
                  for k, v in an.summaries.items()}
        an.propagate(an.module)
        for s in an.scopes[1:]:
            an.propagate(s)
        for s in an.scopes[1:]:
            an.summaries[id(s)] = summarise(an, s)
        moved = an.mark_val_params()
        after = {k: (v.returns, v.scores, tuple((e.kind, e.line, e.labels) for e in v.escapes), v.covered)
                 for k, v in an.summaries.items()}
        if after == before and not moved:
            break
    return an


def summarise(an: Analysis, s: Scope) -> Summary:
    returns = frozenset()
    for node in own_nodes(s.node):
        if isinstance(node, (ast.Return, ast.Yield)) and node.value is not None:
            returns |= an.labels(node.value, s)
    st = Structure(an, s)
    scores = frozenset()
    decorated = any(is_no_grad(d) for d in getattr(s.node, "decorator_list", []))
    if decorated:
        for n in own_nodes(s.node):
            if isinstance(n, (ast.Name, ast.Attribute)) and isinstance(getattr(n, "ctx", None), ast.Load):
                scores |= an.data(n, s)
    for stmt in s.node.body:
        for _, labs in st.scoring_labels(stmt):
            scores |= labs
    escapes, covered = [], frozenset()
    for node, up in st.updates():
        params = frozenset(l for l in up.labels if l.startswith("P"))
        if not params:
            continue
        how, line, loop = st.coverage(node, up)
        if how == "covered" and not up.scored_after:  # an adapt-before-score inside the callee stays one
            covered |= params
        else:
            ep = st.epoch_loop(node)
            inner = an.taint_path(sink_operand(node, up), s)[1:] if not up.chain else []
            escapes.append(replace(up, labels=params, chain=inner + up.chain,
                                   epoch_line=up.epoch_line or (ep.lineno if ep is not None else 0),
                                   restored_line=up.restored_line or (0 if up.chain else st.restored_after(node)),
                                   scored_after=up.scored_after or ((line, loop.lineno) if how == "before" else ()),
                                   guard=up.guard or st.off_by_default(node),
                                   scored_in_callee=line if how == "self" else up.scored_in_callee))
    return Summary(data_labels(returns) | (returns & {"TGT"}), scores, tuple(escapes), covered)


def findings_of(an: Analysis) -> tuple[list[Finding], list[Finding]]:
    """(findings, recognised legal structures) over every scope, on the fixpoint's labels."""
    out, legal = [], []
    u = an.unit.origin
    for s in an.scopes:
        st = Structure(an, s)
        for node, up in st.updates():
            if not an.relevant(up.labels, s):
                continue
            how, line, loop = st.coverage(node, up)
            if up.scored_after:
                how = "inner"  # the callee adapts before it scores: no caller's structure makes that legal
            if how != "covered" and "VAL" not in up.labels:
                continue  # on a parameter: reported at the call sites that pass val data
            where = f"{s.name}()" if s.node is not an.tree else "module level"
            path = an.taint_path(sink_operand(node, up), s) + up.chain
            if how == "covered":
                ep = st.epoch_loop(loop) if loop is not None else None
                if ep is not None:
                    out.append(Finding("epochs", "FAIL", u, ep.lineno,
                                       f"epoch loop at line {ep.lineno} repeats the score-first loop at line "
                                       f"{loop.lineno}: chunks are re-scored after the model adapted on them "
                                       f"({up.kind}: {up.where()})", path))
                else:
                    legal.append(Finding("val_update", "PASS", u, up.sink_line,
                                         f"{where}: scored under no_grad at line {line} before {up.kind} "
                                         f"{up.where()}" + (f", in the loop at line {loop.lineno}" if loop else ""),
                                         path))
                continue
            ep_line = up.epoch_line
            if not ep_line:
                ep = st.epoch_loop(node)
                ep_line = ep.lineno if ep is not None else 0
            restored = up.restored_line or (st.restored_after(node) if isinstance(s.node, DEFS) and not up.chain
                                            else 0)
            guard = up.guard or st.off_by_default(node)
            verdict = "WARN" if restored or guard else "FAIL"
            tail = (f"; its state is reloaded or deleted at line {restored} (effect may not persist: check it is a "
                    f"throwaway)" if restored else "") + (f"; {guard}: a FAIL if the run turns it on" if guard else "")
            if how == "before" or up.scored_after:
                line, loop_line = (line, loop.lineno) if how == "before" else up.scored_after
                msg = (f"{up.kind} on val data, {up.where()}, comes before the same data is scored (line {line}) "
                       f"in the loop at line {loop_line}: it adapts before scoring")
                out.append(Finding("val_update", verdict, u, up.sink_line, msg + tail, path))
            elif ep_line:
                msg = (f"epoch loop (line {ep_line}) trains on val data with no score-first structure: "
                       f"{up.kind}, {up.where()}, in {where}")
                out.append(Finding("epochs", verdict, u, ep_line, msg + tail, path))
            else:
                msg = (f"{up.kind} on val data, {up.where()}, in {where}, with no score of that data under "
                       f"no_grad before it in an enclosing loop")
                out.append(Finding("val_update", verdict, u, up.sink_line, msg + tail, path))
    return out, legal


# ---------------------------------------------------------------- the other checks
def best_of(an: Analysis) -> list[Finding]:
    """min/max/argmin over more than one scored pass (keep the better score)."""
    out = []
    for s in an.scopes:
        for node in own_nodes(s.node):
            if not isinstance(node, ast.Call):
                continue
            name = called_name(node)
            builtin = isinstance(node.func, ast.Name) and name in ("min", "max", "sorted")
            elementwise = name in ("minimum", "maximum", "fmin", "fmax") or \
                (name in ("argmin", "argmax", "nanargmin", "nanmin") and not isinstance(node.func.value, ast.Name)
                 if isinstance(node.func, ast.Attribute) else False) or name in ("argmin", "nanargmin")
            if not (builtin or elementwise):
                continue
            scored = [a for a in node.args if an.relevant(an.labels(a, s), s) and SCORE_WORD.search(ast.unparse(a))]
            many = len(scored) >= 2 or (len(node.args) == 1 and scored and isinstance(
                node.args[0], (ast.GeneratorExp, ast.ListComp, ast.Name, ast.List)))
            if many:
                out.append(Finding("best_of", "FAIL", an.unit.origin, node.lineno,
                                   f"{short(node)} keeps the best of several scored values", an.taint_path(node, s)))
    return out


def target_keys(an: Analysis) -> list[Finding]:
    """Count/hash tables updated with a key built from the target before that target is scored."""
    out = []
    for s in an.scopes:
        st = Structure(an, s)
        for node in own_nodes(s.node):
            table = key = None
            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Subscript):
                table, key = node.target.value, node.target.slice
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and is_counter_update(node):
                table, key = node.targets[0].value, node.targets[0].slice
            elif isinstance(node, ast.Call) and called_name(node) in ("index_add_", "scatter_add_", "index_put_",
                                                                     "put_") and len(node.args) >= 2:
                table = node.func.value
                key = node.args[1] if called_name(node) in ("index_add_", "scatter_add_") else node.args[0]
            elif isinstance(node, ast.Call) and called_name(node) == "at" and len(node.args) >= 2 and \
                    dotted(node.func) in ("np.add.at", "numpy.add.at"):
                table, key = node.args[0], node.args[1]
            if table is None:
                continue
            klabs = an.labels(key, s)
            if "TGT" not in klabs or not data_labels(klabs):
                continue
            tname = dotted(table) or short(table, 30)
            reads = [n for n in own_nodes(s.node) if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load)
                     and (dotted(n.value) or short(n.value, 30)) == tname]
            # Legal: the table is read (the score) before it is updated with this target, in the same loop body.
            stmt_line = node.lineno
            loop = next(iter(st.loops_of(node)), None)
            ok = loop is not None and any(r.lineno < stmt_line and loop in st.ancestors(r) for r in reads)
            if ok:
                continue
            msg = (f"table {tname} updated with a key built from the target ({short(key, 50)}) at line {node.lineno}"
                   + (" before the table is read for that position's score" if reads else ""))
            out.append(Finding("target_key", "FAIL" if reads else "WARN", an.unit.origin, node.lineno, msg,
                               an.taint_path(key, s)))
    return out


def is_counter_update(node: ast.Assign) -> bool:
    """t[k] = t[k] + 1 (the same subscript read on the right)."""
    target = node.targets[0]
    return isinstance(target, ast.Subscript) and any(
        isinstance(n, ast.Subscript) and ast.dump(n) == ast.dump(target) for n in ast.walk(node.value))


def mixtures(an: Analysis) -> list[Finding]:
    """a*p + b*q scored with log() where a component is not a normalised distribution over the vocabulary."""
    out = []
    for s in an.scopes:
        assigned = {}
        for node in own_nodes(s.node):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        assigned.setdefault(t.id, []).append(node.value)
        for node in own_nodes(s.node):
            if not (isinstance(node, ast.Call) and called_name(node) == "log"):
                continue
            arg = node.args[0] if node.args else node.func.value if isinstance(node.func, ast.Attribute) else None
            if arg is None:
                continue
            mix, name = arg, None
            if isinstance(arg, ast.Name) and arg.id in assigned:
                name, mix = arg.id, assigned[arg.id][-1]
            if not (isinstance(mix, ast.BinOp) and isinstance(mix.op, ast.Add)):
                continue
            terms = [mix.left, mix.right]
            if not all(PROB_WORD.search(ast.unparse(t)) for t in terms) or not an.data(mix, s):
                continue
            if name and renormalised(s, name):
                continue
            bad = [t for t in terms if not normalised(t, assigned)]
            if bad:
                out.append(Finding("mixture", "FAIL", an.unit.origin, node.lineno,
                                   f"log of a mixture {short(mix, 60)}: {short(bad[0], 40)} is not a distribution "
                                   f"normalised over the vocabulary, and the sum is not renormalised",
                                   an.taint_path(mix, s)))
    return out


def normalised(term: ast.AST, assigned: dict, depth: int = 0) -> bool:
    """The term's probability comes from a softmax (or a sum-normalised tensor) over the full last dim."""
    text = ast.unparse(term)
    if any(w + "(" in text for w in NORMALISERS) or re.search(r"/\s*\w+\.sum\(\s*(dim\s*=\s*)?-1", text):
        return True
    if depth < 3:
        for n in ast.walk(term):
            if isinstance(n, ast.Name) and n.id in assigned and any(normalised(v, assigned, depth + 1)
                                                                    for v in assigned[n.id]):
                return True
    return False


def renormalised(scope: Scope, name: str) -> bool:
    for node in own_nodes(scope.node):
        if isinstance(node, ast.Call) and called_name(node) in NORMALISERS and any(
                isinstance(n, ast.Name) and n.id == name for a in node.args for n in ast.walk(a)):
            return True
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and isinstance(node.op, ast.Div) and \
                re.search(rf"\b{name}\b.*\.sum\(", ast.unparse(node)):
            return True
    return False


def eval_io(an: Analysis) -> list[Finding]:
    """Train shards or the network touched by the functions that score val data (and what they call)."""
    roots = []
    for s in an.scopes[1:]:
        summ = an.summaries[id(s)]
        st = Structure(an, s)
        direct = any(is_no_grad(d) for d in s.node.decorator_list) or any(
            isinstance(n, (ast.With, ast.AsyncWith)) and any(is_no_grad(i.context_expr) for i in n.items)
            and any(an.relevant(labs, s) for _, labs in st.scoring_labels(n)) for n in own_nodes(s.node))
        trains = any(isinstance(n, ast.Call) and called_name(n) == "backward" and isinstance(n.func, ast.Attribute)
                     and not an.relevant(an.labels(n.func.value, s), s) for n in ast.walk(s.node))
        if direct and summ.scores and not trains:
            roots.append(s)
    on_path, stack = set(), list(roots)
    while stack:
        s = stack.pop()
        if id(s) in on_path:
            continue
        on_path.add(id(s))
        for node in own_nodes(s.node):
            if isinstance(node, ast.Call):
                stack.extend(c for c, _ in an.resolve(node))
    out = []
    for s in an.scopes:
        eval_path = id(s) in on_path
        for node in own_nodes(s.node):
            net = network_use(node, an.net_aliases)
            if net and (eval_path or not isinstance(node, (ast.Import, ast.ImportFrom))):
                out.append(Finding("eval_io", "FAIL" if eval_path else "WARN", an.unit.origin, node.lineno,
                                   f"network: {net} in {s.name}()" + (" on the eval path" if eval_path else
                                                                      " (not on the eval path)")))
            elif eval_path:
                train = train_use(node)
                if train:
                    out.append(Finding("eval_io", "FAIL", an.unit.origin, node.lineno,
                                       f"training data: {train} in {s.name}(), on the eval path"))
    return out


def is_network_module(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in NETWORK_MODULES)


def network_aliases(tree: ast.Module) -> set[str]:
    """Names bound to network modules or their members by the file's imports."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names if is_network_module(a.name)}
        elif isinstance(node, ast.ImportFrom) and is_network_module(node.module or ""):
            out |= {a.asname or a.name for a in node.names}
    return out


def network_use(node: ast.AST, aliases: set[str]) -> str | None:
    """An import of a network module, or a call into one (urlopen, requests.get, socket.socket, ...)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        return next((f"import {m}" for m in mods if is_network_module(m)), None)
    if isinstance(node, ast.Call):
        path = dotted(node.func) or ""
        if called_name(node) in NETWORK_CALLS or path.split(".")[0] in aliases:
            return short(node, 50)
    return None


def train_use(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and TRAIN_PATH.search(node.value) and \
            re.search(r"[*]|\.bin$", node.value):
        return repr(node.value)
    if isinstance(node, ast.Attribute) and TRAIN_NAME.match(node.attr):
        return short(node, 40)
    return None


# ---------------------------------------------------------------- the report
def audit_file(path: Path) -> dict:
    """The static audit of one file: {'file', 'units', 'checks': [...], 'score_first': [...]}. Never runs it."""
    units = load_units(Path(path))
    findings, legal = [], []
    try:
        for unit in units:
            an = analyse(unit)
            f, l = findings_of(an)
            findings += f + best_of(an) + target_keys(an) + mixtures(an) + eval_io(an)
            legal += l
    finally:
        _OWN_NODES.clear()
    findings, legal = dedupe(findings), dedupe(legal)
    names = {u.origin: "" if i == 0 else f"decoded_{i}.py " for i, u in enumerate(units)}
    checks = []
    for key, title in CHECKS:
        mine = sorted((f for f in findings if f.check == key), key=lambda f: (-RANK[f.verdict], f.line))
        verdict = max((f.verdict for f in mine), key=RANK.get, default="PASS")
        mine_legal = [f for f in legal if f.check == key]
        detail = "; ".join(f"{names[f.unit]}line {f.line}: {f.message}" for f in mine[:3]) or (
            f"{len(mine_legal)} update(s) on val data, each after a score of the same data" if mine_legal
            else "none found")
        checks.append(dict(check=key, name=title, verdict=verdict, evidence="static", detail=detail,
                           findings=[f.as_dict() for f in mine], recognised=[f.as_dict() for f in mine_legal]))
    return dict(file=str(path), units=[u.origin for u in units], checks=checks,
                score_first=[f.as_dict() for f in legal])


def dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per (check, source, line, verdict): a sink reached from several call sites is reported once."""
    seen: dict[tuple, Finding] = {}
    counts: dict[tuple, int] = {}
    for f in findings:
        key = (f.check, f.unit, f.line, f.verdict)
        seen.setdefault(key, f)
        counts[key] = counts.get(key, 0) + 1
    for key, f in seen.items():
        if counts[key] > 1:
            f.message += f" (and {counts[key] - 1} more call site(s))"
    return list(seen.values())


def report_lines(report: dict) -> list[str]:
    """The checklist as the user-run checks print it: one line per check, then the recognised legal structures."""
    units = report["units"]
    lines = [f"audit --static {report['file']}: read with ast, never run"]
    lines += [f"      decoded_{i}.py (audited; write it out with --unpack): {u}" for i, u in enumerate(units[1:], 1)]
    width = max(len(c["name"]) for c in report["checks"])
    lines += [f"{c['verdict']}  {c['name']:<{width}}  {c['detail']}" for c in report["checks"]]
    lines += [f"      score-first recognised, line {f['line']}: {f['message']}" for f in report["score_first"]]
    counts = {v: sum(c["verdict"] == v for c in report["checks"]) for v in RANK}
    lines.append(f"audit --static: {counts['PASS']}/{len(report['checks'])} PASS"
                 + "".join(f", {counts[v]} {v}" for v in ("WARN", "FAIL") if counts[v]))
    return lines


def unpacked_sources(path: Path) -> list[tuple[str, str]]:
    """(origin, source) of every unit, for a reviewer who wants to read the decoded code."""
    return [(u.origin, u.text) for u in load_units(Path(path))]
