"""Pack a recipe into one self-contained train_gpt.py: only the code the recipe reaches, in pipeline order.

python tools/pack.py [--recipe NAME] [-o PATH] [--check] [--readable]

How (all analysis with `ast`, nothing of the package is imported except golf/recipes.py for the recipe and
golf/static_audit.py for the names it reads meaning from):
- Modules: the golf modules golf/train.py imports, transitively; ordered by import dependency
  (topological), ties broken by PIPELINE. Each becomes a section with a banner carrying the first
  line of its docstring.
- Units: every top-level statement that binds a name (def, class, assignment, try-import) is a unit.
  From `run` and the `if __name__ == "__main__":` footer of golf/train.py, the packer follows the names
  each unit reads from module scope (real scoping: locals, parameters and comprehension variables are
  not references), resolved through `from golf.x import name`, and keeps only the units reached.
- Slots: `pick(SLOT, cfg.FIELD, "SETTING")` (or a SETTING literal naming a Config field) ties the
  dict literal SLOT to Config.FIELD; the packed SLOT keeps only the recipe's key, so unchosen pieces
  are unreachable and dropped. A slot also picked by a runtime value is kept whole, unless PARSED_SLOTS
  (golf/config.py) declares it: then it keeps the keys the declared function parses out of the recipe's
  setting (e.g. the codecs "embed=zpaq,ctx" names) and out of the declared constants (what the code always uses).
- Conditional methods: a method decorated `@packed_when("field", value)` is packed only when the recipe's Config
  field has that value (without the decorator); otherwise it and the names only it reads are left out.
- Options packed off: for each Config field in PACKED_OPTIONS (golf/config.py) that the recipe leaves off (falsy),
  an `if` without else whose test reads only such fields and literals is cut (the only statement of a block becomes
  `pass`), `a if TEST else b` becomes `(b)`, and what only they read is left out. PACKED_OFF in the packed file lists
  those fields; its from_env refuses an env var that turns one on ("not available here; pack the recipe that has it").
- Config: field defaults the recipe changes are rewritten; RECIPE (golf/config.py) becomes the
  recipe's name. Only these nodes are re-rendered; everything else is the original source text,
  comments included (and the comment lines directly above a unit).
- Imports: non-golf imports of kept code, unused ones dropped, deduplicated, sorted into
  __future__ / stdlib / third-party, at the top. `from golf...` imports disappear.
The shipped form is the smallest runnable one: -o gets a self-extracting file (the source minified by
python-minifier, compressed by brotli or lzma, whichever is smaller, held as Latin-1 bytes in one string literal;
registered with linecache so tracebacks and inspect.getsource work; the file counted against the 16,000,000 bytes is
this one) and the readable source goes beside it as <name>.readable.py. --readable writes only the readable source
to -o. --check exits 1 when either file differs from a fresh pack.
"""

import argparse
import ast
import base64
import copy
import dataclasses
import difflib
import heapq
import lzma
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import brotli
import python_minifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from golf.static_audit import names_val_data  # noqa: E402

PACKAGE = "golf"
ENTRY_MODULE = "train"  # golf/train.py: run(code_path) and its __main__ footer
ENTRY_NAME = "run"
CONFIG_MODULE, CONFIG_CLASS, RECIPE_CONSTANT = "config", "Config", "RECIPE"
PICK = ("config", "pick")  # golf/config.py: pick(slot, choice, setting)
PACKED = ("config", "packed")  # golf/config.py: packed("field"), False where the option is packed off
PACKED_WHEN = ("config", "packed_when")  # golf/config.py: @packed_when("field", value) on a method
PACKED_OPTIONS, PACKED_OFF = "PACKED_OPTIONS", "PACKED_OFF"  # golf/config.py: options pruned when off, and those pruned
PARSED_SLOTS = "PARSED_SLOTS"  # golf/config.py: slots whose keys a setting names through a parse
# Tie-break for modules the import graph leaves unordered: a module's first dotted component.
PIPELINE = ("config", "dist", "data", "caseops", "tokenizer", "model", "params", "optim", "kernels", "quant",
            "compress", "artifact", "evaluate", "ttt", "train")
LOADER_NAMES = ("brotli", "linecache", "lzma", "sys", "traceback", "_packed_source")  # bound by the loader of the shipped file


class PackError(Exception):
    """The package breaks a packing convention; the message names file:line and the fix."""


# ---------------------------------------------------------------- scope analysis

class ScopeNames(ast.NodeVisitor):
    """Names one scope binds and reads. Nested scopes (def, lambda, class, comprehension) are analysed
    separately; what they read from outside themselves lands in `inner_free`."""

    def __init__(self):
        self.bound, self.loads, self.inner_free = set(), set(), set()
        self.declared_global, self.declared_nonlocal = set(), set()

    def visit_Name(self, node):
        (self.loads if isinstance(node.ctx, ast.Load) else self.bound).add(node.id)

    def visit_Global(self, node):
        self.declared_global.update(node.names)

    def visit_Nonlocal(self, node):
        self.declared_nonlocal.update(node.names)

    def visit_Import(self, node):
        for a in node.names:
            self.bound.add(a.asname or a.name.split(".")[0])

    def visit_ImportFrom(self, node):
        for a in node.names:
            if a.name != "*":
                self.bound.add(a.asname or a.name)

    def visit_ExceptHandler(self, node):
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node):
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node):
        if node.name:
            self.bound.add(node.name)

    def visit_MatchMapping(self, node):
        if node.rest:
            self.bound.add(node.rest)
        self.generic_visit(node)

    def _signature(self, args: ast.arguments, returns=None):
        """Defaults and annotations are evaluated in the enclosing scope."""
        for d in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(d)
        for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if a is not None and a.annotation is not None:
                self.visit(a.annotation)
        if returns is not None:
            self.visit(returns)

    def visit_FunctionDef(self, node):
        self.bound.add(node.name)
        for d in node.decorator_list:
            self.visit(d)
        self._signature(node.args, node.returns)
        self.inner_free |= function_free(node.args, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        self._signature(node.args)
        self.inner_free |= function_free(node.args, [node.body])

    def visit_ClassDef(self, node):
        self.bound.add(node.name)
        for n in node.decorator_list + node.bases + node.keywords:
            self.visit(n)
        body = ScopeNames()
        for stmt in node.body:
            body.visit(stmt)
        # Class-body names are not visible inside its methods: inner_free passes through unfiltered.
        self.inner_free |= (body.loads - body.bound) | body.inner_free | body.declared_global

    def _comprehension(self, node, parts):
        self.visit(node.generators[0].iter)  # the first iterable is evaluated outside
        inner = ScopeNames()
        for i, gen in enumerate(node.generators):
            inner.visit(gen.target)
            if i:
                inner.visit(gen.iter)
            for cond in gen.ifs:
                inner.visit(cond)
        for part in parts:
            inner.visit(part)
        targets = set()
        for gen in node.generators:
            targets |= {n.id for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
        self.bound |= inner.bound - targets  # walrus targets bind in the enclosing scope
        self.inner_free |= (inner.loads | inner.inner_free) - targets

    def visit_ListComp(self, node):
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node):
        self._comprehension(node, [node.key, node.value])


def function_free(args: ast.arguments, body: list) -> set[str]:
    """Names a function body reads from outside itself."""
    scope = ScopeNames()
    for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
        if a is not None:
            scope.bound.add(a.arg)
    for stmt in body:
        scope.visit(stmt)
    local = scope.bound - scope.declared_global - scope.declared_nonlocal
    return ((scope.loads | scope.inner_free) - local) | scope.declared_global


def module_level_names(stmt: ast.stmt) -> tuple[set[str], set[str]]:
    """(names a top-level statement binds in module scope, names it reads from module scope)."""
    scope = ScopeNames()
    scope.visit(stmt)
    return scope.bound | scope.declared_global, scope.loads | scope.inner_free | scope.declared_global


# ---------------------------------------------------------------- modules and units

@dataclass(frozen=True)
class ImportRec:
    """One imported name: `import module [as asname]` (name None) or `from module import name [as asname]`."""
    module: str
    name: str | None
    asname: str | None
    where: str  # golf/x.py:LINE

    @property
    def binds(self) -> str:
        if self.name is None:
            return self.asname or self.module.split(".")[0]
        return self.asname or self.name

    @property
    def target(self) -> str:
        """What the bound name refers to, to tell a harmless duplicate from a clash."""
        if self.name is None:
            return self.module if self.asname else self.module.split(".")[0]
        return f"{self.module}.{self.name}"

    def text(self) -> str:
        alias = f" as {self.asname}" if self.asname else ""
        return f"import {self.module}{alias}" if self.name is None else f"{self.name}{alias}"


@dataclass
class Unit:
    module: str
    node: ast.stmt
    binds: set[str]
    refs: set[str]

    @property
    def line(self) -> int:
        return self.node.lineno


@dataclass
class Module:
    name: str  # dotted below the package: "model.gpt"
    path: str  # golf/model/gpt.py
    source: str
    lines: list[str]
    doc: str
    units: list[Unit] = field(default_factory=list)
    defs: dict[str, list[Unit]] = field(default_factory=dict)
    golf_imports: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (module, where)
    ext_imports: dict[str, list[ImportRec]] = field(default_factory=dict)
    main: ast.If | None = None

    def where(self, node) -> str:
        return f"{self.path}:{node.lineno}"


def is_main_guard(stmt: ast.stmt) -> bool:
    t = stmt.test if isinstance(stmt, ast.If) else None
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
            and len(t.comparators) == 1 and isinstance(t.comparators[0], ast.Constant)
            and t.comparators[0].value == "__main__")


def module_path(root: Path, name: str) -> Path:
    return root / PACKAGE / (name.replace(".", "/") + ".py")


def load_module(root: Path, name: str) -> Module:
    path = module_path(root, name)
    rel = f"{PACKAGE}/{name.replace('.', '/')}.py"
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=rel)
    except SyntaxError as e:
        raise PackError(f"{rel}:{e.lineno}: syntax error: {e.msg}") from None
    mod = Module(name, rel, source, source.splitlines(keepends=True), ast.get_docstring(tree) or "")
    body = tree.body[1:] if mod.doc else tree.body
    for stmt in body:
        where = mod.where(stmt)
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                if a.name.split(".")[0] == PACKAGE:
                    raise PackError(f"{where}: `import {a.name}`: golf modules import names "
                                    f"(`from {a.name} import NAME`), never golf modules")
                rec = ImportRec(a.name, None, a.asname, where)
                mod.ext_imports.setdefault(rec.binds, []).append(rec)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                raise PackError(f"{where}: relative import; use `from golf.x import NAME`")
            top = (stmt.module or "").split(".")[0]
            for a in stmt.names:
                if a.name == "*":
                    raise PackError(f"{where}: `from {stmt.module} import *`: import names explicitly")
                if top == PACKAGE:
                    if a.asname:
                        raise PackError(f"{where}: `{a.name} as {a.asname}`: golf names are imported "
                                        "without aliases (they are unique across golf)")
                    if stmt.module == PACKAGE:
                        raise PackError(f"{where}: `from golf import {a.name}`: import names from their "
                                        "module (`from golf.x import NAME`)")
                    mod.golf_imports[a.name] = (stmt.module[len(PACKAGE) + 1:], where)
                else:
                    rec = ImportRec(stmt.module, a.name, a.asname, where)
                    mod.ext_imports.setdefault(rec.binds, []).append(rec)
        elif is_main_guard(stmt):
            mod.main = stmt
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue  # a bare string: documentation, no effect
        else:
            binds, refs = module_level_names(stmt)
            if not binds:
                raise PackError(f"{where}: module-level statement binds no name (a side effect on import); "
                                "move it into a function")
            unit = Unit(name, stmt, binds, refs)
            mod.units.append(unit)
            for b in sorted(binds):
                mod.defs.setdefault(b, []).append(unit)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in tree.body:
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if getattr(node, "level", 0) or any(m.split(".")[0] == PACKAGE for m in mods):
                raise PackError(f"{mod.where(node)}: golf import inside a block; golf imports belong at the "
                                "top of the module (the packed file has no golf package)")
    return mod


def load_package(root: Path) -> dict[str, Module]:
    """The entry module and every golf module it imports, transitively."""
    modules, todo = {}, [(ENTRY_MODULE, None)]
    while todo:
        name, importer = todo.pop()
        if name in modules:
            continue
        path = module_path(root, name)
        if not path.is_file():
            rel = f"{PACKAGE}/{name.replace('.', '/')}"
            what = "a package, not a module: import names from its modules" if path.with_suffix("").is_dir() \
                else "which does not exist"
            raise PackError(f"{importer or rel}: imports {PACKAGE}.{name}, {what} ({rel}.py)")
        modules[name] = load_module(root, name)
        todo.extend((m, w) for m, w in modules[name].golf_imports.values())
    return modules


def module_order(modules: dict[str, Module]) -> list[str]:
    """Topological by `from golf.x import` (x first); ties by PIPELINE position, then name."""
    def rank(name: str):
        top = name.split(".")[0]
        return (PIPELINE.index(top) if top in PIPELINE else len(PIPELINE), name)

    deps = {n: {m for m, _ in mod.golf_imports.values() if m != n} for n, mod in modules.items()}
    users = {n: set() for n in modules}
    for n, ds in deps.items():
        for d in ds:
            users[d].add(n)
    left = {n: len(ds) for n, ds in deps.items()}
    ready = [rank(n) for n, k in left.items() if k == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for u in users[n]:
            left[u] -= 1
            if left[u] == 0:
                heapq.heappush(ready, rank(u))
    if len(order) < len(modules):
        stuck = sorted(n for n in modules if n not in order)
        raise PackError(f"import cycle among golf modules: {', '.join(stuck)}")
    return order


# ---------------------------------------------------------------- names

def check_unique_names(modules: dict[str, Module]) -> None:
    """Every golf import names something its module binds; one binding per top-level name across golf
    (a module may rebind its own name); third-party imports of the same name mean the same thing."""
    for name in sorted(modules):
        for imported in sorted(modules[name].golf_imports):
            resolve(modules, name, imported)
    owner: dict[str, tuple[str, str]] = {}  # name -> (module, where)
    for name in sorted(modules):
        mod = modules[name]
        for b, units in mod.defs.items():
            if b in owner and owner[b][0] != name:
                raise PackError(f"name {b!r} is defined twice: {owner[b][1]} and {mod.where(units[0].node)}; "
                                "top-level names must be unique across golf (rename one)")
            owner.setdefault(b, (name, mod.where(units[0].node)))
    targets: dict[str, ImportRec] = {}
    for name in sorted(modules):
        for b, recs in modules[name].ext_imports.items():
            for rec in recs:
                if b in owner:
                    raise PackError(f"name {b!r} is defined at {owner[b][1]} and imported at {rec.where}; "
                                    "top-level names must be unique across golf (rename one)")
                first = targets.setdefault(b, rec)
                if first.target != rec.target:
                    raise PackError(f"name {b!r} is imported as {first.target} at {first.where} and as "
                                    f"{rec.target} at {rec.where}; one name, one meaning across golf")


def resolve(modules: dict[str, Module], module: str, name: str, seen=()):
    """('def', module) | ('import', ImportRec) | None (a builtin or a local the analysis does not see)."""
    mod = modules[module]
    if name in mod.defs:
        return ("def", module)
    if name in mod.golf_imports:
        target, where = mod.golf_imports[name]
        if (target, name) in seen:
            raise PackError(f"{where}: {name} is imported in a cycle")
        tmod = modules[target]
        if name not in tmod.defs and name not in tmod.golf_imports and name not in tmod.ext_imports:
            raise PackError(f"{where}: imports {name} from golf.{target}, which does not define it")
        return resolve(modules, target, name, seen + ((target, name),))
    if name in mod.ext_imports:
        return ("import", mod.ext_imports[name][0])
    return None


# ---------------------------------------------------------------- slots and recipe

@dataclass(frozen=True)
class Slot:
    module: str
    name: str
    choice_field: str | None  # None: picked by a runtime value somewhere, kept whole
    where: str
    parse: str | None = None  # PARSED_SLOTS: the golf/config.py function naming the keys of choice_field's setting
    constants: tuple[str, ...] = ()  # PARSED_SLOTS: "module.NAME" constants whose names are kept too


def pick_field(call: ast.Call, fields: set[str], where: str) -> str | None:
    """The Config field a pick call chooses by: `cfg.FIELD` (also `self.cfg.FIELD`) as the choice, or a
    setting literal that is a field's env name (pick(MLP_ACTIVATIONS, activation, "MLP_ACTIVATION"))."""
    by_attr = by_setting = None
    if len(call.args) > 1:
        choice = call.args[1]
        if isinstance(choice, ast.Attribute) and choice.attr in fields and (
                (isinstance(choice.value, ast.Name) and choice.value.id == "cfg")
                or (isinstance(choice.value, ast.Attribute) and choice.value.attr == "cfg")):
            by_attr = choice.attr
    if len(call.args) > 2:
        setting = call.args[2]
        if isinstance(setting, ast.Constant) and isinstance(setting.value, str) and setting.value.isupper() \
                and setting.value.lower() in fields:
            by_setting = setting.value.lower()
    if by_attr and by_setting and by_attr != by_setting:
        raise PackError(f"{where}: pick chooses by cfg.{by_attr} but names the setting {by_setting.upper()}")
    return by_attr or by_setting


def find_slots(modules, units: list[Unit], fields: set[str]) -> dict[tuple[str, str], Slot]:
    """Every pick(SLOT, ...) in `units` whose SLOT is a golf top-level name -> the Config field choosing it."""
    found: dict[tuple[str, str], list[tuple[str | None, str]]] = {}
    for unit in units:
        mod = modules[unit.module]
        for node in ast.walk(unit.node):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args
                    and isinstance(node.args[0], ast.Name)):
                continue
            if resolve(modules, unit.module, node.func.id) != ("def", PICK[0]) or node.func.id != PICK[1]:
                continue
            target = resolve(modules, unit.module, node.args[0].id)
            if target is None or target[0] != "def":
                continue  # a generic helper passing its own mapping along
            where = mod.where(node)
            found.setdefault((target[1], node.args[0].id), []).append((pick_field(node, fields, where), where))
    slots = {}
    for key in sorted(found):
        uses = found[key]
        chosen = {f for f, _ in uses if f}
        if len(chosen) > 1:
            a, b = sorted(uses, key=lambda u: u[1])[:2]
            raise PackError(f"slot {key[1]} is chosen by two settings: {a[0]} at {a[1]}, {b[0]} at {b[1]}")
        dynamic = [w for f, w in uses if f is None]
        slots[key] = Slot(key[0], key[1], None if dynamic or not chosen else chosen.pop(),
                          dynamic[0] if dynamic else uses[0][1])
    declared = parsed_slots(modules, fields)
    for unit in units:
        for name in unit.binds:
            if (unit.module, name) in declared:
                slots[(unit.module, name)] = declared[(unit.module, name)]
    return slots


def parsed_slots(modules, fields: set[str]) -> dict[tuple[str, str], Slot]:
    """PARSED_SLOTS (golf/config.py): (module, slot) -> its Slot with the parse function and constants."""
    if CONFIG_MODULE not in modules:
        return {}
    mod = modules[CONFIG_MODULE]
    out = {}
    for unit in mod.defs.get(PARSED_SLOTS, []):
        where = mod.where(unit.node)
        try:
            declared = ast.literal_eval(unit.node.value)
        except ValueError:
            raise PackError(f"{where}: {PARSED_SLOTS} must be a dict literal "
                            '{"module.SLOT": ("field", "function", ("module.CONSTANT", ...))}') from None
        for target, (field_, parse, constants) in declared.items():
            module, _, name = target.rpartition(".")
            if field_ not in fields or parse not in mod.defs:
                raise PackError(f"{where}: {PARSED_SLOTS}[{target!r}]: {field_!r} must be a field of {CONFIG_CLASS} "
                                f"and {parse!r} a function of {mod.path}")
            out[(module, name)] = Slot(module, name, field_, where, parse, tuple(constants))
    return out


def slot_keys(modules, slot: Slot, recipe: dict) -> list[str]:
    """The keys of slot the packed file keeps: the recipe's choice, or for a PARSED_SLOTS slot the names its function
    parses out of the recipe's setting and out of its constants."""
    if slot.parse is None:
        return [recipe[slot.choice_field]]
    config = modules[CONFIG_MODULE]
    functions = {name for s in config.defs.get(PARSED_SLOTS, [])
                 for _, name, _ in ast.literal_eval(s.node.value).values()}
    namespace: dict = {}
    for name in sorted(functions):  # the declared functions alone: they read builtins and each other
        for unit in config.defs[name]:
            exec(compile(ast.Module([unit.node], []), str(config.path), "exec"), namespace)
    texts = [recipe[slot.choice_field]]
    for constant in slot.constants:
        module, _, name = constant.rpartition(".")
        units = modules[module].defs.get(name, []) if module in modules else []
        if len(units) != 1 or not isinstance(units[0].node, ast.Assign):
            raise PackError(f"{slot.where}: {PARSED_SLOTS} names {constant}, which is not one assignment in golf")
        value = ast.literal_eval(units[0].node.value)
        texts.extend([value] if isinstance(value, str) else value)
    return list(dict.fromkeys(key for text in texts for key in namespace[slot.parse](text)))


def slot_dict(mod: Module, unit: Unit, slot: Slot) -> ast.Dict:
    node = unit.node
    value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
    if not isinstance(value, ast.Dict) or len(unit.binds) != 1 or not all(
            isinstance(k, ast.Constant) and isinstance(k.value, str) for k in value.keys):
        raise PackError(f"{mod.where(node)}: slot {slot.name} (chosen by {slot.choice_field.upper()} at "
                        f"{slot.where}) must be a dict literal with string keys: {slot.name} = {{\"name\": piece}}")
    return value


def pruned_slot(modules, unit: Unit, slot: Slot, recipe: dict) -> tuple[ast.Dict, list[tuple[ast.expr, ast.expr]]]:
    """(the dict node, [(kept key node, kept value node)] in the dict's order) for the recipe's choice."""
    mod = modules[unit.module]
    value = slot_dict(mod, unit, slot)
    keys = [k.value for k in value.keys]
    for choice in slot_keys(modules, slot, recipe):
        if choice not in keys:
            names = f" names {choice!r}" if choice != recipe[slot.choice_field] else ""
            raise PackError(f"recipe sets {slot.choice_field}={recipe[slot.choice_field]!r}{names}, which is not a key "
                            f"of {slot.name} at {mod.where(unit.node)} (keys: {', '.join(keys)})")
    kept = set(slot_keys(modules, slot, recipe))
    return value, [(k, v) for k, v in zip(value.keys, value.values) if k.value in kept]


def literal(value) -> str:
    """Source text for a recipe value; strings in double quotes like the rest of golf."""
    if isinstance(value, str) and '"' not in value and "\\" not in value and value.isprintable():
        return f'"{value}"'
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return f"({', '.join(map(literal, value))}{',' if len(value) == 1 else ''})"
    text = repr(value)
    try:
        if ast.literal_eval(text) != value:
            raise ValueError
    except (ValueError, SyntaxError):
        raise PackError(f"recipe value {value!r} has no literal form the packed Config can hold") from None
    return text


def config_fields(mod: Module) -> tuple[Unit, dict[str, ast.AnnAssign]]:
    for unit in mod.defs.get(CONFIG_CLASS, []):
        if isinstance(unit.node, ast.ClassDef):
            return unit, {s.target.id: s for s in unit.node.body
                          if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    raise PackError(f"{mod.path}: no class {CONFIG_CLASS}")


def recipe_edits(mod: Module, recipe: dict) -> list[tuple[ast.AST, str]]:
    """(default-value node, new source) for every Config field whose recipe value differs from the library's."""
    _, fields = config_fields(mod)
    edits = []
    for name in sorted(recipe, key=lambda n: fields[n].lineno if n in fields else 0):
        if name not in fields:
            raise PackError(f"recipe sets {name!r}, which is not a field of {CONFIG_CLASS} in {mod.path}")
        node = fields[name].value
        try:
            default = ast.literal_eval(node) if node is not None else dataclasses.MISSING
        except ValueError:
            raise PackError(f"{mod.where(fields[name])}: default of {name} is not a literal; "
                            "the packer can only rewrite literal defaults") from None
        if default is dataclasses.MISSING:
            raise PackError(f"{mod.where(fields[name])}: {name} has no default to rewrite")
        value = recipe[name]
        if isinstance(default, float) and type(value) is int:
            value = float(value)  # Config(max_wallclock_seconds=300) keeps the field a float
        if default != value or type(default) is not type(value):
            edits.append((node, literal(value)))
    return edits


# ---------------------------------------------------------------- conditional methods

def marked_methods(modules, unit: Unit, fields: set[str]) -> list[tuple[ast.stmt, ast.Call, str, object]]:
    """(method, its @packed_when decorator, field, value) for each marked method of a class unit."""
    if not isinstance(unit.node, ast.ClassDef):
        return []
    mod, found = modules[unit.module], []
    for i, stmt in enumerate(unit.node.body):
        for dec in getattr(stmt, "decorator_list", []):
            if not (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Name) and dec.func.id == PACKED_WHEN[1]
                    and resolve(modules, unit.module, dec.func.id) == ("def", PACKED_WHEN[0])):
                continue
            args = [a.value for a in dec.args if isinstance(a, ast.Constant)]
            if len(dec.args) != 2 or len(args) != 2 or args[0] not in fields or i == 0:
                raise PackError(f"{mod.where(dec)}: write @{PACKED_WHEN[1]}(\"field\", value) with a Config field "
                                "and a literal, on a method that is not the first statement of its class")
            found.append((stmt, dec, args[0], args[1]))
    return found


def dropped_methods(modules, unit: Unit, recipe: dict) -> tuple[list[ast.stmt], list[ast.Call]]:
    """(the marked methods this recipe leaves out, the decorators of those it keeps)."""
    marked = marked_methods(modules, unit, set(recipe))
    return ([m for m, _, f, v in marked if recipe[f] != v], [d for _, d, f, v in marked if recipe[f] == v])


def class_refs(unit: Unit, dropped: list[ast.stmt], kept_decorators: list[ast.Call]) -> set[str]:
    """What a class reads from module scope without its dropped methods and the markers of its kept ones."""
    return module_level_names(kept_node(unit, dropped, kept_decorators))[1]


def kept_node(unit: Unit, dropped: list[ast.stmt], kept_decorators: list[ast.Call]) -> ast.stmt:
    """The unit's node without its dropped methods and the markers of its kept ones (a shallow copy when it
    changes: the statements kept are the original nodes)."""
    if not (dropped or kept_decorators):
        return unit.node
    node = copy.copy(unit.node)
    node.body = []
    for stmt in unit.node.body:
        if stmt in dropped:
            continue
        if any(d in kept_decorators for d in getattr(stmt, "decorator_list", [])):
            stmt = copy.copy(stmt)
            stmt.decorator_list = [d for d in stmt.decorator_list if d not in kept_decorators]
        node.body.append(stmt)
    return node


@dataclass(frozen=True)
class Span:
    """A source range for unit_text's edits: (lineno, col_offset) to (end_lineno, end_col_offset)."""
    lineno: int
    col_offset: int
    end_lineno: int
    end_col_offset: int


def method_edits(modules, unit: Unit, recipe: dict) -> list[tuple[Span, str]]:
    """Cut each dropped method (with the blank and comment lines above it) and each kept method's marker line."""
    dropped, kept_decorators = dropped_methods(modules, unit, recipe)
    body = getattr(unit.node, "body", [])
    edits = []
    for method in dropped:
        prev = body[body.index(method) - 1]
        edits.append((Span(prev.end_lineno, prev.end_col_offset, method.end_lineno, method.end_col_offset), ""))
    for dec in kept_decorators:
        edits.append((Span(dec.lineno, 0, dec.end_lineno + 1, 0), ""))
    return edits


# ---------------------------------------------------------------- options packed off

def options_off(modules, recipe: dict) -> dict[str, object]:
    """The PACKED_OPTIONS (golf/config.py) the recipe leaves off (a falsy value) -> that value."""
    declared = ()
    for unit in modules[CONFIG_MODULE].defs.get(PACKED_OPTIONS, []) if CONFIG_MODULE in modules else []:
        try:
            declared = ast.literal_eval(unit.node.value)
        except ValueError:
            raise PackError(f"{modules[CONFIG_MODULE].where(unit.node)}: {PACKED_OPTIONS} must be a tuple literal "
                            "of Config field names") from None
    unknown = [name for name in declared if name not in recipe]
    if unknown:
        raise PackError(f"{PACKED_OPTIONS} names {', '.join(unknown)}, not a field of {CONFIG_CLASS}")
    return {name: recipe[name] for name in declared if not recipe[name]}


def static_test(test: ast.expr, off: dict):
    """(True, value) when `test` reads only options packed off (`cfg.F`, `self.cfg.F`, `packed("F")`) and literals,
    through comparisons, `not`, `and`/`or`, or is an `and` with such an operand that is false; else (False, None)."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        for operand in test.values:
            known_, result_ = static_test(operand, off)
            if known_ and not result_:  # `and` is false with one false operand, whatever the others read
                return True, False
    known, values = True, []

    def value(node):
        nonlocal known
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Attribute) and node.attr in off and (
                (isinstance(node.value, ast.Name) and node.value.id == "cfg")
                or (isinstance(node.value, ast.Attribute) and node.value.attr == "cfg")):
            return off[node.attr]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == PACKED[1] and len(
                node.args) == 1 and isinstance(node.args[0], ast.Constant) and not node.keywords:
            return node.args[0].value not in off
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not value(node.operand)
        if isinstance(node, ast.BoolOp):
            values = [value(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(
                node.ops[0], (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
            a, b = value(node.left), value(node.comparators[0])
            if known:
                op = type(node.ops[0])
                return {ast.Eq: a == b, ast.NotEq: a != b}.get(op) if op in (ast.Eq, ast.NotEq) else \
                    {ast.Lt: lambda: a < b, ast.LtE: lambda: a <= b, ast.Gt: lambda: a > b,
                     ast.GtE: lambda: a >= b}[op]()
            return None
        known = False
        return None

    try:
        result = value(test)
    except TypeError:  # a comparison of unorderable literals: left as it is
        return False, None
    return (True, result) if known else (False, None)


def pruned_branches(node: ast.AST, off: dict) -> list[ast.AST]:
    """The outermost `if` statements without else and `a if TEST else b` expressions whose TEST is statically false
    with the options packed off."""
    found, stack = [], [(node, None)]
    while stack:
        n, parent = stack.pop()
        elif_ = isinstance(parent, ast.If) and parent.orelse == [n] and n.col_offset == parent.col_offset
        if isinstance(n, (ast.If, ast.IfExp)) and not (isinstance(n, ast.If) and (n.orelse or elif_)):
            known, result = static_test(n.test, off)
            if known and not result:
                found.append(n)
                if isinstance(n, ast.IfExp):
                    stack.append((n.orelse, n))
                continue
        stack.extend((c, n) for c in ast.iter_child_nodes(n))
    return found


def branch_edits(node: ast.AST, off: dict) -> list[tuple[Span, str]]:
    """Cut each pruned `if` (from the end of the statement before it, so the comments above it go too; the only
    statement of a block becomes `pass`); a pruned `a if TEST else b` becomes `(b)`."""
    pruned = pruned_branches(node, off)
    edits = []
    bodies = {id(stmt): body for n in ast.walk(node) for field_ in ("body", "orelse", "finalbody")
              for body in [getattr(n, field_, None)] if isinstance(body, list) for stmt in body}
    for n in pruned:
        if isinstance(n, ast.IfExp):
            edits.append((n, f"({ast.unparse(n.orelse)})"))
            continue
        body = bodies[id(n)]
        i = body.index(n)
        if i > 0:
            prev = body[i - 1]
            edits.append((Span(prev.end_lineno, prev.end_col_offset, n.end_lineno, n.end_col_offset), ""))
        elif len(body) > 1:
            edits.append((Span(n.lineno, n.col_offset, body[1].lineno, body[1].col_offset), ""))
        else:
            edits.append((n, "pass"))
    return edits


# ---------------------------------------------------------------- reachability

@dataclass
class Plan:
    kept: list[Unit]
    imports: list[ImportRec]
    slots: dict[tuple[str, str], Slot]


def reach(modules, slots, recipe) -> tuple[list[Unit], set[ImportRec], dict[str, set[str]]]:
    """Units reachable from the entry point; slot dicts contribute only their chosen value's names, pruned
    branches none."""
    off = options_off(modules, recipe)
    entry = modules[ENTRY_MODULE]
    if entry.main is None:
        raise PackError(f"{entry.path}: no `if __name__ == \"__main__\":` footer to start from")
    if ENTRY_NAME not in entry.defs:
        raise PackError(f"{entry.path}: no top-level {ENTRY_NAME}() to start from")
    kept: dict[int, Unit] = {}
    imports: set[ImportRec] = set()
    builtins_read: dict[str, set[str]] = {}  # module -> names it reads that no golf binding or import provides
    todo = [(ENTRY_MODULE, n) for n in sorted(module_level_names(entry.main)[1] | {ENTRY_NAME})]
    seen = set()
    while todo:
        module, name = todo.pop()
        if (module, name) in seen:
            continue
        seen.add((module, name))
        found = resolve(modules, module, name)
        if found is None:
            builtins_read.setdefault(module, set()).add(name)
            continue
        if found[0] == "import":
            imports.add(found[1])
            continue
        for unit in modules[found[1]].defs[name]:
            if id(unit) in kept:
                continue
            kept[id(unit)] = unit
            refs = unit.refs
            dropped, kept_decorators = dropped_methods(modules, unit, recipe)
            if dropped or kept_decorators:
                refs = class_refs(unit, dropped, kept_decorators)
            cut = branch_edits(kept_node(unit, dropped, kept_decorators), off) if off else []
            if cut:  # what the packed text of the unit reads
                text = unit_text(modules[unit.module], unit, method_edits(modules, unit, recipe) + cut)
                refs = module_level_names(ast.parse(text).body[0])[1]
            slot = slots.get((unit.module, name))
            if slot and slot.choice_field:
                _, pairs = pruned_slot(modules, unit, slot, recipe)
                refs = {r for key, value in pairs for node in (key, value)
                        for r in module_level_names(ast.Expr(node))[1]}
            todo.extend((unit.module, r) for r in sorted(refs))
    return list(kept.values()), imports, builtins_read


def plan_pack(modules: dict[str, Module], recipe: dict) -> Plan:
    fields = set(config_fields(modules[CONFIG_MODULE])[1]) if CONFIG_MODULE in modules else set()
    for key in recipe:
        if key not in fields:
            raise PackError(f"recipe sets {key!r}, which is not a field of {CONFIG_CLASS}")
    slots: dict = {}
    # Pruning can only shrink what is reached, which can only turn kept-whole slots into pruned ones.
    while True:
        kept, imports, builtins_read = reach(modules, slots, recipe)
        found = find_slots(modules, kept, fields)
        if found == slots:
            break
        slots = found
    # `from __future__` imports change how a module compiles: they travel with any module that is packed.
    for module in sorted({u.module for u in kept}):
        imports |= {r for recs in modules[module].ext_imports.values() for r in recs if r.module == "__future__"}
    owner = {b: u for u in kept for b in u.binds}
    owner.update({rec.binds: rec for rec in imports})
    for module, names in sorted(builtins_read.items()):
        for name in sorted(names & set(owner)):
            other = owner[name]
            where = other.where if isinstance(other, ImportRec) else modules[other.module].where(other.node)
            raise PackError(f"{modules[module].path} reads {name!r} as a builtin, but {where} binds it at top "
                            "level; in the packed file it would shadow the builtin (rename it)")
    for name in LOADER_NAMES:
        if name in owner and not isinstance(owner[name], ImportRec):
            raise PackError(f"{modules[owner[name].module].where(owner[name].node)}: {name!r} is reserved "
                            "for the loader of the shipped file")
    return Plan(kept, sorted(imports, key=lambda r: (r.module, r.name or "", r.asname or "")), slots)


# ---------------------------------------------------------------- emitting

def char_col(line: str, byte_col: int) -> int:
    return len(line.encode("utf-8")[:byte_col].decode("utf-8"))


def unit_text(mod: Module, unit: Unit, edits: list[tuple[ast.AST, str]]) -> str:
    """The unit's original source (with its decorators and the comment lines directly above it),
    with each edited node's span replaced by new text."""
    node = unit.node
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    while first > 1 and mod.lines[first - 2].lstrip().startswith("#"):
        first -= 1
    lines = mod.lines[first - 1 : node.end_lineno]
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln))
    text = "".join(lines)

    def pos(lineno, col):
        return offsets[lineno - first] + char_col(mod.lines[lineno - 1], col)

    for target, new in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        a, b = pos(target.lineno, target.col_offset), pos(target.end_lineno, target.end_col_offset)
        text = text[:a] + new + text[b:]
    return text.rstrip("\n") + "\n"


def import_block(imports: list[ImportRec]) -> str:
    """__future__, stdlib, third-party sections; `import x` lines before `from x import` lines."""
    sections: dict[int, tuple[set[str], dict[str, set[str]]]] = {0: (set(), {}), 1: (set(), {}), 2: (set(), {})}
    for rec in imports:
        top = rec.module.split(".")[0]
        sec = 0 if top == "__future__" else 1 if top in sys.stdlib_module_names else 2
        plain, froms = sections[sec]
        if rec.name is None:
            plain.add(rec.text())
        else:
            froms.setdefault(rec.module, set()).add(rec.text())
    blocks = []
    for sec in (0, 1, 2):
        plain, froms = sections[sec]
        lines = sorted(plain, key=lambda t: t.split()[1:]) + [
            f"from {m} import {', '.join(sorted(names))}" for m, names in sorted(froms.items())]
        if lines:
            blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def header(recipe_name: str) -> str:
    return (f'"""Parameter Golf training script, recipe "{recipe_name}": packed from the golf library by '
            "tools/pack.py.\n\n"
            f"Generated file: edit golf/ and re-run `python tools/pack.py --recipe {recipe_name}`. Configured by env\n"
            "vars named after Config's fields (PRESET=smoke for a CPU run); the 8xH100 run is\n"
            "`torchrun --standalone --nproc_per_node=8 train_gpt.py`.\n"
            '"""\n')


def banner(mod: Module) -> str:
    first = mod.doc.strip().splitlines()[0] if mod.doc.strip() else ""
    return f"# ---- {mod.path}{': ' + first if first else ''} ----\n"


def is_def(unit: Unit) -> bool:
    return isinstance(unit.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))


def emit(modules: dict[str, Module], plan: Plan, recipe_name: str, recipe: dict) -> str:
    edits: dict[int, list] = {}
    for (module, name), slot in plan.slots.items():
        if slot.choice_field:
            mod = modules[module]
            for unit in mod.defs[name]:
                value, pairs = pruned_slot(modules, unit, slot, recipe)
                entries = [f"{ast.get_source_segment(mod.source, k)}: {ast.get_source_segment(mod.source, v)}"
                           for k, v in pairs]
                new = f"{{{entries[0]}}}" if len(entries) == 1 else \
                    "{\n" + "".join(f"    {e},\n" for e in entries) + "}"
                edits.setdefault(id(unit), []).append((value, new))
    if CONFIG_MODULE in modules:
        cfg_mod = modules[CONFIG_MODULE]
        cfg_unit, _ = config_fields(cfg_mod)
        changes = recipe_edits(cfg_mod, recipe)
        if changes and not any(u is cfg_unit for u in plan.kept):
            raise PackError(f"the recipe changes {CONFIG_CLASS} but the packed code never uses it")
        edits.setdefault(id(cfg_unit), []).extend(changes)
        for unit in cfg_mod.defs.get(RECIPE_CONSTANT, []):
            if isinstance(unit.node, ast.Assign):
                edits.setdefault(id(unit), []).append((unit.node.value, literal(recipe_name)))
    off = options_off(modules, recipe)
    if off:
        units = [u for u in modules[CONFIG_MODULE].defs.get(PACKED_OFF, []) if any(u is k for k in plan.kept)]
        if not units:
            raise PackError(f"the recipe leaves {', '.join(off)} off, but the packed code never reads {PACKED_OFF} "
                            "to refuse turning them on")
        for unit in units:
            edits.setdefault(id(unit), []).append((unit.node.value, literal(tuple(off))))

    for unit in plan.kept:
        edits.setdefault(id(unit), []).extend(method_edits(modules, unit, recipe))
        if off:
            dropped, kept_decorators = dropped_methods(modules, unit, recipe)
            edits[id(unit)].extend(branch_edits(kept_node(unit, dropped, kept_decorators), off))
    kept_ids = {id(u) for u in plan.kept}
    out = [header(recipe_name), "\n", import_block(plan.imports)]
    for name in module_order(modules):
        mod = modules[name]
        units = [u for u in mod.units if id(u) in kept_ids]
        if not units:
            continue
        out += ["\n\n", banner(mod)]
        prev, prev_index = None, -2
        for unit in units:
            index = mod.units.index(unit)
            if prev is None:
                gap = 0
            elif is_def(unit) or is_def(prev):
                gap = 2
            else:  # consecutive constants: keep them together when they were together
                between = mod.lines[prev.node.end_lineno : unit_text_start(mod, unit) - 1]
                gap = 1 if index != prev_index + 1 or any(not ln.strip() for ln in between) else 0
            out += ["\n" * gap, unit_text(mod, unit, edits.get(id(unit), []))]
            prev, prev_index = unit, index
    entry = modules[ENTRY_MODULE]
    footer = "".join(entry.lines[entry.main.lineno - 1 : entry.main.end_lineno]).rstrip("\n") + "\n"
    out += ["\n\n", footer]
    return "".join(out)


def unit_text_start(mod: Module, unit: Unit) -> int:
    node = unit.node
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    while first > 1 and mod.lines[first - 2].lstrip().startswith("#"):
        first -= 1
    return first


def pack_source(root: Path, recipe_name: str, recipe: dict) -> str:
    """The packed train_gpt.py for `recipe` (Config field -> value) from the golf package under `root`."""
    modules = load_package(Path(root))
    check_unique_names(modules)
    src = emit(modules, plan_pack(modules, recipe), recipe_name, recipe)
    ast.parse(src)  # a packer bug must not ship
    return src


# ---------------------------------------------------------------- compression and sizes

# python-minifier settings of the shipped form, measured on the default pack (readable 216,097 B, minified then
# brotli-11). The record's own pyminify flags (--no-rename-locals --no-hoist-literals --remove-literal-statements
# --remove-asserts --prefer-single-line) give 31,997 B; these settings alone 31,239 B, and with the triton rules of
# minify_for_shipping 30,498 B. Renaming locals saves 1,634 B; hoisting literals would add 201 B and removing
# `return None` 33 B. Globals are renamed too, but for shipped_globals() (-1,206 B on the default of issue 24,
# 31,885 -> 30,679; from_env's PACKED_OFF check adds 27). Arguments keep their names: python-minifier never renames a
# parameter that a call could pass by keyword.
SHIPPED_MINIFY = dict(
    remove_annotations=python_minifier.RemoveAnnotationsOptions(
        remove_variable_annotations=True, remove_return_annotations=True,
        remove_argument_annotations=False,  # all or none: minify_for_shipping keeps the kernels' only
        remove_class_attribute_annotations=False),  # dataclass fields: Config's fields are its env vars
    remove_literal_statements=True,  # docstrings: the readable twin keeps them
    rename_locals=True, rename_globals=True, hoist_literals=False, remove_explicit_return_none=False,
    prefer_single_line=True)

# Globals other code reads from the shipped module by name: Config (its repr is logged; its fields, the env vars, are
# attributes and never renamed), RECIPE, the entry points (run, main); what tools/preflight.py loads
# (load_training_file's list, held against it by tests/test_pack.py); what tests/test_pack.py runs of the shipped
# kernels. GolfError also names the class in error lines a user reads.
SHIPPED_NAMES = (CONFIG_CLASS, RECIPE_CONSTANT, ENTRY_NAME, "main",
                 "from_env", "GPT", "size_report", "param_rules", "assign_rules", "build_optimizers",
                 "calibrate_hessians", "quantize_and_write", "select_attention", "DistEnv", "eval_passes", "GolfError",
                 "window_plan", "load_val_tokens", "doc_spans", "read_artifact", "MLP_ACTIVATIONS", "softcap_cross_entropy",
                 "TRITON_AVAILABLE", "triton_interpreting", "LeakyReluSquareTriton", "leaky_relu_sq_torch",
                 "flash_attention", "softcap_cross_entropy_triton", "softcap_cross_entropy_torch")


def shipped_globals(tree: ast.Module) -> list[str]:
    """The module-level names the shipped file keeps: SHIPPED_NAMES, and every name the static audit takes for val
    data or a val loader by its name alone (golf/static_audit.py names_val_data), so it audits the shipped file as
    it audits the readable one."""
    bound = set()
    for stmt in tree.body:
        bound |= module_level_names(stmt)[0]
    return sorted(n for n in bound if n in SHIPPED_NAMES or names_val_data(n))


def is_jit(fn: ast.FunctionDef) -> bool:
    """Decorated by `triton.jit` (or any `jit`, called or bare)."""
    for dec in fn.decorator_list:
        dec = dec.func if isinstance(dec, ast.Call) else dec
        if (dec.attr if isinstance(dec, ast.Attribute) else getattr(dec, "id", "")) == "jit":
            return True
    return False


def arguments(fn: ast.FunctionDef) -> list[ast.arg]:
    a = fn.args
    return [arg for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if arg is not None]


def minify_for_shipping(src: str) -> str:
    """The code that runs, nothing else: `src` through python-minifier (the readable twin keeps the rest). Triton
    kernels are special: triton.jit compiles by their argument annotations (`BLOCK: tl.constexpr`), so only theirs
    stay (nothing else in golf reads one at run time: no inspect.signature, get_type_hints or singledispatch; -607 B),
    and their arguments are never aliased by a local (python-minifier's `D=BLOCK` makes `tl.arange(0, D)` fail in
    triton's interpreter: arange's arguments must be of type tl.constexpr; -134 B more, aliases compress badly)."""
    tree = ast.parse(src)
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    kernel_args = sorted({arg.arg for fn in functions if is_jit(fn) for arg in arguments(fn)})
    for fn in functions:
        if not is_jit(fn):
            for arg in arguments(fn):
                arg.annotation = None
    # triton's interpreter compiles a kernel with string annotations and knows a constexpr only as "tl.constexpr":
    # the module names in kernel annotations keep theirs.
    annotation_names = {n.id for fn in functions if is_jit(fn) for arg in arguments(fn) if arg.annotation
                        for n in ast.walk(arg.annotation) if isinstance(n, ast.Name)}
    shipped = python_minifier.minify(ast.unparse(tree), **SHIPPED_MINIFY, preserve_locals=kernel_args,
                                     preserve_globals=sorted(set(shipped_globals(tree)) | annotation_names))
    ast.parse(shipped)  # a minifier bug must not ship
    return shipped


def lzma_pack(data: bytes) -> bytes:
    # .lzma ("alone") format: a 13-byte header that lzma.decompress detects by itself (a raw stream would need its
    # filter chain spelled out in the loader, longer than the header); lc=3, pb=0 suit text.
    filters = [{"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "lc": 3, "lp": 0, "pb": 0}]
    return lzma.compress(data, format=lzma.FORMAT_ALONE, filters=filters)


# Each compressor is named by the module whose decompress(bytes) undoes it: the loader imports that module.
COMPRESSORS = {"brotli": lambda data: brotli.compress(data, quality=11), "lzma": lzma_pack}


def latin1_literal(data: bytes) -> str:
    """A triple-quoted str literal of a Latin-1 source file whose .encode("latin-1") is `data`. Each byte is the one
    character Latin-1 decodes it to, except those the tokenizer cannot hold: NUL (refused in source), CR (read as a
    newline), backslash (starts an escape) and a quote that would close the literal (one followed by another, or the
    last byte). About 3 bytes in 256 take an escape, 1.2% over the payload where base85 adds 25%."""
    out = []
    for i, byte in enumerate(data):
        nxt = data[i + 1 : i + 2]
        if byte == 0:
            out.append("\\000" if nxt and nxt in b"01234567" else "\\0")  # \0 then a digit would read as octal
        elif byte == 13:
            out.append("\\r")
        elif byte == 92:
            out.append("\\\\")
        elif byte == 34 and nxt in (b'"', b""):
            out.append('\\"')
        else:
            out.append(chr(byte))
    return '"""' + "".join(out) + '"""'


def loader(codec: str, payload: bytes) -> bytes:
    """A Latin-1 source file that decompresses `payload` with `codec` (a module with decompress()), registers the
    source with linecache under this file's own path (so inspect.getsource and triton.jit see the real source), and
    runs it in this module's namespace (so __name__, __file__ and pickling by module name behave as in the readable
    file). Python 3.11's default excepthook reads source lines from disk, which would show the loader's lines:
    traceback's uses linecache."""
    return ("# coding: latin-1\n"
            f"import {codec},linecache,sys,traceback\n"
            f"_packed_source={codec}.decompress({latin1_literal(payload)}.encode('latin-1')).decode()\n"
            "linecache.cache[__file__]=(len(_packed_source),None,_packed_source.splitlines(True),__file__)\n"
            "sys.excepthook=traceback.print_exception\n"
            "exec(compile(_packed_source,__file__,'exec'))\n").encode("latin-1")


def shipped_file(src: str) -> tuple[bytes, dict]:
    """(the shipped file, the bytes of each stage): `src` minified, compressed by whichever compressor gives fewer
    bytes (a tie goes to the first listed), inside loader(). base85 is what the payload would take as base85 text."""
    code = minify_for_shipping(src).encode("utf-8")
    compressed = {name: compress(code) for name, compress in COMPRESSORS.items()}
    codec = min(compressed, key=lambda name: len(compressed[name]))
    data = loader(codec, compressed[codec])
    literal = len(latin1_literal(compressed[codec])) - len('""""""')  # one byte per character in Latin-1
    return data, {"raw": len(src.encode("utf-8")), "minified": len(code), **{n: len(c) for n, c in compressed.items()},
                  "chosen": codec, "literal": literal, "base85": len(base64.b85encode(compressed[codec])),
                  "self_extracting": len(data)}


def self_extracting(src: str) -> bytes:
    return shipped_file(src)[0]


# ---------------------------------------------------------------- command line

def write_atomic(path: Path, data: bytes) -> None:
    """Write a temp file beside `path`, then rename: an interrupted pack never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644)  # mkstemp makes it 0600
    os.replace(tmp, path)


def load_recipe(name: str) -> dict:
    from golf.recipes import RECIPES

    if name not in RECIPES:
        raise PackError(f"--recipe {name}: no such recipe in golf/recipes.py (choices: {', '.join(RECIPES)})")
    return dataclasses.asdict(RECIPES[name])


def readable_path(path: Path) -> Path:
    return path.with_name(path.stem + ".readable.py")


def check_files(files: dict[Path, bytes], fix: str) -> int:
    """0 when every file holds exactly the fresh bytes; else 1 with a message and, for text, the head of a diff (the
    readable twin is listed first: its diff is the one that says what changed)."""
    for path, data in files.items():
        old = path.read_bytes() if path.is_file() else b""
        if old != data:
            print(f"pack --check: {path} differs from a fresh pack; run `{fix}`", file=sys.stderr)
            try:
                diff = difflib.unified_diff(old.decode("utf-8").splitlines(), data.decode("utf-8").splitlines(),
                                            f"{path} (on disk)", f"{path} (fresh pack)", lineterm="", n=1)
                print("\n".join(list(diff)[:30]), file=sys.stderr)
            except UnicodeDecodeError:
                pass  # the shipped file is Latin-1 bytes: no line diff to show
            return 1
    print(f"pack --check: {', '.join(str(p) for p in files)} up to date")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="default")
    ap.add_argument("-o", "--output", default=str(ROOT / "train_gpt.py"))
    ap.add_argument("--check", action="store_true", help="exit 1 if the output file differs from a fresh pack")
    ap.add_argument("--readable", action="store_true",
                    help="write only the readable source to -o (default: the self-extracting file + <name>.readable.py)")
    args = ap.parse_args(argv)
    try:
        src = pack_source(ROOT, args.recipe, load_recipe(args.recipe))
    except PackError as e:
        print(f"pack: {e}", file=sys.stderr)
        return 2
    out = Path(args.output)
    shipped, s = shipped_file(src)
    readable = src.encode("utf-8")
    files = {out: readable} if args.readable else {readable_path(out): readable, out: shipped}
    if args.check:
        return check_files(files, f"python tools/pack.py --recipe {args.recipe}{' --readable' if args.readable else ''}")
    for path, data in files.items():
        write_atomic(path, data)
    print(f"{out}: recipe {args.recipe!r}, {s['raw']} bytes readable, {s['minified']} minified, {s['brotli']} brotli, "
          f"{s['lzma']} lzma -> {s['chosen']}; as a Latin-1 literal {s['literal']} (base85 would be {s['base85']}); "
          f"{s['self_extracting']} as the self-extracting file{'' if args.readable else ' <- written'}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
