import ast
import dataclasses
import hashlib
import os
import re
import runpy
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from golf.logparse import parse_run_log
from golf.static_audit import AuditInputError, audit_file, unpacked_sources
from tools.pack import (COMPRESSORS, SHIPPED_NAMES, PackError, check_files, function_free, latin1_literal, load_package,
                        loader, minify_for_shipping, module_order, pack_source, self_extracting, shipped_file)

ROOT = Path(__file__).resolve().parents[1]
# Runs a script with the golf package made unimportable: sys.modules["golf"] = None makes any
# `import golf...` raise ImportError, whatever sys.path or an editable install would find.
NO_GOLF = "import runpy, sys; sys.modules['golf'] = None; sys.argv = [sys.argv[1]]; runpy.run_path(sys.argv[0], run_name='__main__')"

TOY = {
    "golf/__init__.py": "",
    "golf/config.py": '''
        """Toy config: the knobs."""

        from dataclasses import dataclass

        RECIPE = "library"


        class GolfError(Exception):
            """Bad input."""


        @dataclass(frozen=True)
        class Config:
            block: str = "parallel"  # BLOCKS
            width: int = 4
            act: str = "relu"


        def pick(slot, choice, setting):
            if choice not in slot:
                raise GolfError(f"{setting}={choice!r}: not available here")
            return slot[choice]
        ''',
    "golf/dist.py": '''
        """Toy dist."""

        import os


        def world() -> int:
            return int(os.environ.get("WORLD_SIZE", "1"))
        ''',
    "golf/data.py": '''
        """Toy data."""

        import math
        import os

        from golf.dist import world


        def tokens(n):
            return [i % 7 for i in range(n * world())]


        def unused_reader():
            return os.listdir(".")
        ''',
    "golf/model/blocks.py": '''
        """Toy blocks: a slot of two."""

        import functools
        import math

        from golf.config import pick


        def parallel_block(x):
            return x + 1


        # Kept as the recipe asks.
        def sequential_block(x):
            return math.floor(x) * 2


        def relu(x):
            return max(x, 0)


        def gelu(x):
            return x


        BLOCKS = {"parallel": parallel_block, "sequential": sequential_block}
        ACTS = {"relu": relu, "gelu": gelu}


        def build(cfg):
            act = pick(ACTS, cfg.act, "ACT")
            return functools.partial(pick(BLOCKS, cfg.block, "BLOCK")), act
        ''',
    "golf/train.py": '''
        """Toy entry: main() and run()."""

        from __future__ import annotations

        import inspect
        import os
        import sys

        from golf.config import RECIPE, Config, GolfError
        from golf.data import tokens
        from golf.model.blocks import build


        def unused_helper():
            return 0


        def main(code_path: str) -> None:
            cfg = Config()
            block, act = build(cfg)
            unused_helper = [block(t) for t in tokens(cfg.width)]  # a local: not a reference to the def
            print(f"recipe:{RECIPE} block:{cfg.block} width:{cfg.width} out:{unused_helper} act:{act(-1)}")
            print("source_ok" if "def main" in inspect.getsource(main) else "source_missing")


        def run(code_path: str) -> None:
            try:
                main(code_path)
            except GolfError as e:
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)


        if __name__ == "__main__":
            run(__file__)
        ''',
}
TOY_RECIPE = {"block": "sequential", "width": 3, "act": "relu"}


def write_toy(root: Path, **overrides) -> Path:
    for rel, text in {**TOY, **overrides}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    (root / "golf/model/__init__.py").touch()
    return root


def run_isolated(script: Path, env_extra=None, timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-I", "-c", NO_GOLF, script.name], cwd=script.parent, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def toy(tmp_path):
    return write_toy(tmp_path / "repo")


def imports_of(src: str) -> list[str]:
    mods = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            mods += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods.append(node.module or "")
    return mods


# ---------------------------------------------------------------- toy package

def test_pack_is_deterministic_and_self_contained(toy):
    a = pack_source(toy, "toy", TOY_RECIPE)
    b = pack_source(toy, "toy", TOY_RECIPE)
    assert a == b
    ast.parse(a)
    assert not [m for m in imports_of(a) if m.split(".")[0] == "golf"]
    assert "# ---- golf/config.py: Toy config: the knobs. ----" in a
    assert "# ---- golf/model/blocks.py: Toy blocks: a slot of two. ----" in a


def test_only_reached_code_and_chosen_slot_entries(toy):
    src = pack_source(toy, "toy", TOY_RECIPE)
    assert 'BLOCKS = {"sequential": sequential_block}' in src
    assert 'ACTS = {"relu": relu}' in src
    assert "def parallel_block" not in src and "def gelu" not in src
    assert "def unused_reader" not in src
    assert "def unused_helper" not in src  # only a local of the same name reads it
    assert "# Kept as the recipe asks.\ndef sequential_block" in src  # comments above a def travel with it
    assert 'block: str = "parallel"  # BLOCKS' not in src and 'block: str = "sequential"  # BLOCKS' in src
    assert "width: int = 3" in src and 'RECIPE = "toy"' in src


def test_imports_are_pruned_deduplicated_and_sorted(toy):
    src = pack_source(toy, "toy", TOY_RECIPE)
    head = src[src.index('"""\n') + 4 : src.index("# ----")].strip().splitlines()
    assert head == ["from __future__ import annotations", "", "import functools", "import inspect", "import math",
                    "import os", "import sys", "from dataclasses import dataclass"]


def test_module_order_is_topological_with_pipeline_ties(toy):
    modules = load_package(toy)
    assert module_order(modules) == ["config", "dist", "data", "model.blocks", "train"]
    src = pack_source(toy, "toy", TOY_RECIPE)
    banners = re.findall(r"^# ---- golf/(\S+)\.py", src, re.M)
    assert banners == ["config", "dist", "data", "model/blocks", "train"]


def test_packed_toy_runs_without_golf(toy, tmp_path):
    out = tmp_path / "run" / "train_gpt.py"
    out.parent.mkdir()
    out.write_text(pack_source(toy, "toy", TOY_RECIPE))
    res = run_isolated(out)
    assert res.returncode == 0, res.stderr
    assert "recipe:toy block:sequential width:3 out:[0, 2, 4] act:0" in res.stdout
    assert "source_ok" in res.stdout
    # The env still overrides, and an unpacked choice is a clear error, not a KeyError.
    bad = (toy / "golf/train.py").read_text().replace("cfg = Config()", "cfg = Config(block='parallel')")
    write_toy(toy, **{"golf/train.py": bad})
    out.write_text(pack_source(toy, "toy", TOY_RECIPE))
    res = run_isolated(out)
    assert res.returncode == 2 and "BLOCK='parallel': not available here" in res.stderr


def test_compressed_file_runs_and_keeps_source_for_inspect(toy, tmp_path):
    src = pack_source(toy, "toy", TOY_RECIPE).replace(
        'print("source_ok"', 'print(inspect.getsource(main).splitlines()[0])\n    print("source_ok"')
    out = tmp_path / "train_gpt.py"
    out.write_bytes(self_extracting(src))
    assert b"def main" not in out.read_bytes()  # the code really is compressed
    res = run_isolated(out)
    assert res.returncode == 0, res.stderr
    assert "def main(code_path):" in res.stdout and "source_ok" in res.stdout  # the minified source, as it runs
    # Tracebacks show the shipped (minified) source lines, not the loader's.
    crash = tmp_path / "crash.py"
    crash.write_bytes(self_extracting("def boom():\n    raise ValueError('packed line')\n\nboom()\n"))
    res = run_isolated(crash)
    assert re.search(r"line 1, in (\w+)\n.*def \1\(\):raise ValueError\('packed line'\)", res.stderr), res.stderr
    data, s = shipped_file(src)
    assert s["self_extracting"] == len(data) and data == self_extracting(src) and s["brotli"] < s["minified"] < s["raw"]
    assert s["chosen"] in COMPRESSORS and s["literal"] < s["base85"]


def test_recipe_key_missing_from_slot_is_an_error(toy):
    with pytest.raises(PackError, match=r"block='looped', which is not a key of BLOCKS at golf/model/blocks.py:\d+"):
        pack_source(toy, "toy", {**TOY_RECIPE, "block": "looped"})
    with pytest.raises(PackError, match="'depth', which is not a field of Config"):
        pack_source(toy, "toy", {"depth": 3})


def test_name_collision_names_both_definitions(toy):
    dist = (toy / "golf/dist.py").read_text() + "\n\ndef tokens(n):\n    return n\n"
    write_toy(toy, **{"golf/dist.py": dist})
    with pytest.raises(PackError, match=r"'tokens' is defined twice: golf/data.py:\d+ and golf/dist.py:\d+"):
        pack_source(toy, "toy", TOY_RECIPE)


def test_import_clash_names_both_imports(toy):
    dist = (toy / "golf/dist.py").read_text().replace("import os", "import os\nfrom typing import Iterable")
    data = (toy / "golf/data.py").read_text().replace("import math", "import math\nfrom collections.abc import Iterable")
    write_toy(toy, **{"golf/dist.py": dist, "golf/data.py": data})
    with pytest.raises(PackError, match=r"'Iterable' is imported as .* at golf/data.py:\d+ and as .* at golf/dist.py:\d+"):
        pack_source(toy, "toy", TOY_RECIPE)


@pytest.mark.parametrize("module, line, needle", [
    ("golf/data.py", "import golf.dist", "golf modules import names"),
    ("golf/data.py", "from .dist import world", "relative import"),
    ("golf/data.py", "from golf.dist import world as w", "without aliases"),
    ("golf/data.py", "from golf import dist", "import names from their module"),
    ("golf/data.py", "print('hi')", "binds no name"),
    ("golf/data.py", "def f():\n    from golf.dist import world\n    return world", "inside a block"),
    ("golf/data.py", "from golf.dist import nothing", "golf.dist, which does not define it"),
    ("golf/data.py", "from golf.missing import thing", "golf.missing, which does not exist"),
])
def test_convention_breaks_are_clear_errors(toy, module, line, needle):
    write_toy(toy, **{module: (toy / module).read_text() + "\n\n" + line + "\n"})
    with pytest.raises(PackError, match=re.escape(needle)):
        pack_source(toy, "toy", TOY_RECIPE)


def test_a_reached_definition_may_not_shadow_a_builtin_other_modules_use(toy):
    data = (toy / "golf/data.py").read_text().replace("return [i % 7", "return [max(i, 0) % 7") + \
        "\n\ndef max(a, b):\n    return a if a > b else b\n"
    write_toy(toy, **{"golf/data.py": data})
    with pytest.raises(PackError, match=r"golf/model/blocks.py reads 'max' as a builtin, but golf/data.py:\d+ binds it"):
        pack_source(toy, "toy", TOY_RECIPE)


def test_slot_picked_by_a_runtime_value_is_kept_whole(toy):
    blocks = (toy / "golf/model/blocks.py").read_text() + "\n\ndef by_name(name):\n    return pick(BLOCKS, name, 'x')\n"
    train = (toy / "golf/train.py").read_text().replace(
        "from golf.model.blocks import build", "from golf.model.blocks import build, by_name").replace(
        "    block, act = build(cfg)", "    block, act = build(cfg)\n    by_name('parallel')")
    write_toy(toy, **{"golf/model/blocks.py": blocks, "golf/train.py": train})
    src = pack_source(toy, "toy", TOY_RECIPE)
    assert 'BLOCKS = {"parallel": parallel_block, "sequential": sequential_block}' in src


def test_packed_when_method_is_packed_only_with_its_setting(toy, tmp_path):
    config = (toy / "golf/config.py").read_text() + \
        "\n\ndef packed_when(field, value):\n    return lambda method: method\n"
    data = (toy / "golf/data.py").read_text().replace("from golf.dist import world", textwrap.dedent("""\
        from golf.config import packed_when
        from golf.dist import world


        def only_gelu_reads_me():
            return 5


        class Stream:
            def take(self):
                return 1

            # Said for gelu.
            @packed_when("act", "gelu")
            def gelu_only(self):
                return only_gelu_reads_me()

            def after(self):
                return 2"""))
    train = (toy / "golf/train.py").read_text().replace("from golf.data import tokens",
                                                         "from golf.data import Stream, tokens").replace(
        "    block, act = build(cfg)", "    block, act = build(cfg)\n    print('stream', Stream().take() + Stream().after())")
    write_toy(toy, **{"golf/config.py": config, "golf/data.py": data, "golf/train.py": train})
    relu = pack_source(toy, "toy", TOY_RECIPE)
    assert "def gelu_only" not in relu and "Said for gelu" not in relu and "only_gelu_reads_me" not in relu
    assert "packed_when" not in relu
    assert "        return 1\n\n    def after(self):" in relu  # one blank line between the methods left
    gelu = pack_source(toy, "toy", dict(TOY_RECIPE, act="gelu"))
    assert "    # Said for gelu.\n    def gelu_only(self):\n        return only_gelu_reads_me()" in gelu
    assert "def only_gelu_reads_me" in gelu and "packed_when" not in gelu
    for src in (relu, gelu):
        script = tmp_path / "train_gpt.py"
        script.write_text(src)
        proc = run_isolated(script)
        assert proc.returncode == 0 and "stream 3" in proc.stdout, proc.stderr


def test_check_files_reports_a_diff(tmp_path, capsys):
    path = tmp_path / "train_gpt.py"
    path.write_text("old\n")
    assert check_files({path: b"new\n"}, "python tools/pack.py") == 1
    err = capsys.readouterr().err
    assert "differs from a fresh pack" in err and "-old" in err and "+new" in err
    assert check_files({path: b"old\n"}, "python tools/pack.py") == 0
    assert check_files({path: b"\xff\x00"}, "python tools/pack.py") == 1  # Latin-1 bytes: no diff, still caught
    assert "differs from a fresh pack" in capsys.readouterr().err


@pytest.mark.parametrize("code, free", [
    ("def f(a, b=D):\n    c = a + E\n    return [x for x in c if x > G]", {"E", "G"}),
    ("def f():\n    global H\n    H = 1", {"H"}),
    ("def f(n):\n    g = lambda y: y + n + K\n    return g", {"K"}),
    ("def f():\n    class A(B):\n        z = 1\n        def m(self):\n            return z\n    return A", {"B", "z"}),
    ("def f():\n    v = 0\n    def g():\n        nonlocal v\n        v += 1\n    return g", set()),
    ("def f():\n    try:\n        pass\n    except OSError as e:\n        raise e", {"OSError"}),
    ("def f(xs):\n    return {k: v for k, v in xs.items()}, (w := 3)", set()),
])
def test_free_names(code, free):
    fn = ast.parse(code).body[0]
    assert function_free(fn.args, fn.body) == free


# ---------------------------------------------------------------- the real package

# An option packed off (golf/config.py PACKED_OPTIONS): its `if` branches and what only they reach are left out.
OPTION_CONFIG = TOY["golf/config.py"].replace(
    'RECIPE = "library"\n', 'RECIPE = "library"\n        PACKED_OPTIONS = ("fancy", "gated")\n        PACKED_OFF = ()\n'
).replace("act: str = \"relu\"\n", "act: str = \"relu\"\n            fancy: int = 0\n            gated: bool = False\n")
OPTION_TRAIN = TOY["golf/train.py"].replace("""        def main(code_path: str) -> None:
            cfg = Config()
""", """        def fancy_extra(x):
            return math.sqrt(x)


        def main(code_path: str) -> None:
            cfg = Config()
            for name in PACKED_OFF:
                if os.environ.get(name.upper()):
                    raise GolfError(f"env {name.upper()}: not available here; pack the recipe that has it")
            # fancy: a comment that goes with its branch
            if cfg.fancy > 0 and not cfg.gated:
                print(fancy_extra(cfg.fancy))
            if cfg.width:
                if cfg.gated:
                    print(fancy_extra(2))
            scale = fancy_extra(4) if cfg.gated else 1
""").replace("from golf.config import RECIPE, Config, GolfError", "import math\n\n        from golf.config import "
             "PACKED_OFF, RECIPE, Config, GolfError")


def test_an_option_packed_off_leaves_its_branches_out_and_refuses_its_env_var(toy):
    write_toy(toy, **{"golf/config.py": OPTION_CONFIG, "golf/train.py": OPTION_TRAIN})
    src = pack_source(toy, "toy", {**TOY_RECIPE, "fancy": 0, "gated": False})
    for gone in ("fancy_extra", "a comment that goes with its branch", "if cfg.gated"):
        assert gone not in src, gone
    assert 'PACKED_OFF = ("fancy", "gated")' in src and "if cfg.width:\n        pass\n" in src
    assert "scale = (1)" in src
    out = toy / "train_gpt.py"
    out.write_bytes(self_extracting(src))
    res = run_isolated(out)
    assert res.returncode == 0 and "recipe:toy" in res.stdout, res.stderr
    res = run_isolated(out, {"FANCY": "3"})
    assert res.returncode == 2 and "env FANCY: not available here; pack the recipe that has it" in res.stderr
    # Packed with the option on, nothing is left out and nothing refused.
    src = pack_source(toy, "toy", {**TOY_RECIPE, "fancy": 2, "gated": False})
    assert "def fancy_extra" in src and 'PACKED_OFF = ("gated",)' in src and "if cfg.fancy > 0 and not cfg.gated" in src


def test_the_real_from_env_refuses_an_option_packed_off(tmp_path):
    # golf/config.py's own from_env in a packed file: one clear line, exit 2, before anything runs.
    real_package_or_skip()
    root = tmp_path / "repo"
    for path in (ROOT / "golf").rglob("*.py"):
        (root / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        (root / path.relative_to(ROOT)).write_bytes(path.read_bytes())
    config = root / "golf/config.py"
    text, n = re.subn(r"^PACKED_OPTIONS\b.*$", 'PACKED_OPTIONS = ("ttt_reset_per_doc",)', config.read_text(),
                      flags=re.M)
    assert n == 1
    config.write_text(text)
    sys.path.insert(0, str(ROOT))
    from golf.recipes import RECIPES
    out = tmp_path / "train_gpt.py"
    out.write_bytes(self_extracting(pack_source(root, "default", dataclasses.asdict(RECIPES["default"]))))
    res = run_isolated(out, {"TTT_RESET_PER_DOC": "1"})
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1].endswith(
        "env TTT_RESET_PER_DOC=1: not available here; pack the recipe that has it"), res.stderr[-2000:]


def real_package_or_skip():
    try:
        return load_package(ROOT)
    except PackError as e:
        pytest.skip(f"golf/train.py's modules are not all here yet (before the merge): {e}")


def test_real_default_recipe_packs_only_the_chosen_pieces():
    real_package_or_skip()
    from golf.recipes import RECIPES

    src = pack_source(ROOT, "default", dataclasses.asdict(RECIPES["default"]))
    assert src == pack_source(ROOT, "default", dataclasses.asdict(RECIPES["default"]))
    assert not [m for m in imports_of(src) if m.split(".")[0] == "golf"]
    assert "class SequentialBlock" in src and "class ParallelBlock" not in src  # the frontier: sequential + lanes
    assert 'RECIPE = "default"' in src and "# ---- golf/train.py:" in src
    gpt_j = pack_source(ROOT, "gpt_j_x0", dataclasses.asdict(RECIPES["gpt_j_x0"]))
    assert "class ParallelBlock" in gpt_j and "class SequentialBlock" not in gpt_j
    assert 'block: str = "parallel"' in gpt_j and "doc_attention: bool = False" in gpt_j
    base = pack_source(ROOT, "baseline", dataclasses.asdict(RECIPES["baseline"]))
    assert "class SequentialBlock" in base and "class ParallelBlock" not in base
    assert 'block: str = "sequential"' in base and "num_layers: int = 9" in base


def packed_module(tmp_path, recipe: dict):
    """The readable packed source of `recipe` imported as a module (golf made unimportable: it must not need it)."""
    path = tmp_path / "packed_train_gpt.py"
    path.write_text(pack_source(ROOT, "default", recipe))
    saved = sys.modules.get("golf")
    sys.modules["golf"] = None
    try:
        namespace = runpy.run_path(str(path), run_name="packed_train_gpt")
    finally:
        if saved is None:
            del sys.modules["golf"]
        else:
            sys.modules["golf"] = saved
    return types.SimpleNamespace(**namespace)


def test_parsed_slots_keep_the_names_the_recipe_uses_and_refuse_others_in_one_line(tmp_path):
    # PARSED_SLOTS (golf/config.py): CODEC and SYMBOL_LAYOUT name their codecs, transforms and row orders inside a
    # per-group setting; the pack keeps those and the artifact's fixed ones (header/float codec, float transform,
    # the AUTO_LAYOUTS "auto" may choose). LQER_SELECT and TTT_MODE are plain slots.
    real_package_or_skip()
    from golf.compress import CODECS, TRANSFORMS
    from golf.recipes import RECIPES

    default = dataclasses.asdict(RECIPES["default"])
    assert (default["codec"], default["symbol_layout"]) == ("embed=zpaq,ctx", "embed=simsort+transpose,auto")
    mod = packed_module(tmp_path, default)
    assert list(mod.CODECS) == ["brotli", "ctx", "zpaq"] and len(CODECS) > 3
    assert list(mod.TRANSFORMS) == ["none", "transpose", "shuffle"] and len(TRANSFORMS) > 3
    assert list(mod.ROW_ORDERS) == ["none", "simsort"]
    assert list(mod.LQER_SELECTIONS) == ["weight_error"] and list(mod.TTT_PASSES) == ["doc"]
    assert list(mod.QUANTIZERS) == ["gptq"]
    groups = ["embed", "mlp"]
    mod.check_symbol_settings("embed=zpaq,ctx", "embed=simsort+transpose,auto", groups)  # what the default runs
    tail = "not available here (choices: {}); pack the recipe that has it"
    for call, line in (
            (lambda: mod.check_symbol_settings("embed=zpaq,lzma", "auto", groups),
             "CODEC='lzma': " + tail.format("brotli, ctx, zpaq")),
            (lambda: mod.check_symbol_settings("ctx", "embed=bitpack,auto", groups),
             "SYMBOL_LAYOUT transform='bitpack': " + tail.format("none, transpose, shuffle")),
            (lambda: mod.add_lqer({}, {}, {}, mod.LqerPlan(select="per_byte")),
             "LQER_SELECT='per_byte': " + tail.format("weight_error"))):
        with pytest.raises(mod.GolfError) as err:
            call()
        assert str(err.value) == line
    # In a recipe with AWQ_TOP_K off (pr1855, the 1.0611 record) packed("awq_top_k") cuts the AWQ groups out of
    # GPTQ and the artifact, and the reader refuses a record that has them instead of dropping them.
    assert "AwqGroups" in vars(mod)
    off = packed_module(tmp_path, dataclasses.asdict(RECIPES["pr1855"]))
    assert "AwqGroups" not in vars(off) and "fit_artifact" in vars(off)
    with pytest.raises(off.GolfError) as err:
        off.decode_awq({}, {}, {"starts": [0], "size": 64, "bits": 8}, 4, 128)
    assert str(err.value) == "artifact: AWQ groups (AWQ_TOP_K): not available here; pack the recipe that has it"
    awq = pack_source(ROOT, "default", default)
    assert "class AwqGroups" in awq and 'if packed("awq_top_k") and protect is not None' in awq
    # A recipe that names other pieces packs them (and the library keeps every one).
    other = dict(default, codec="lzma", symbol_layout="bitpack", lqer_select="per_byte", quant_method="rtn")
    src = pack_source(ROOT, "other", other)
    assert 'QUANTIZERS = {"rtn": rtn_from_spec}' in src
    assert '"lzma": (lzma_compress' in src and '"zpaq": (zpaq_compress' not in src and '"bitpack": (' in src
    assert "def select_per_byte" in src and "def select_weight_error" not in src
    with pytest.raises(PackError, match="codec='embed=lz4,ctx' names 'lz4', which is not a key of CODECS"):
        pack_source(ROOT, "bad", dict(default, codec="embed=lz4,ctx"))


def test_committed_train_gpt_is_a_fresh_pack():
    real_package_or_skip()
    res = subprocess.run([sys.executable, str(ROOT / "tools/pack.py"), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------- packed == library (slow)

@pytest.fixture(scope="session")
def sample_data():
    real_package_or_skip()
    # the default's CaseOps sample (data/prepare_sample.py builds it by default)
    data, tok = ROOT / "data/datasets/sample_sp8192_caseops", ROOT / "data/tokenizers/sample_8192_bpe_caseops.model"
    if not (data.is_dir() and tok.is_file()):
        subprocess.run([sys.executable, str(ROOT / "data/prepare_sample.py")], check=True)
    return {"DATA_PATH": str(data), "TOKENIZER_PATH": str(tok)}


def run_lines(log: Path) -> tuple[list, tuple]:
    """(step, train_loss) of every logged step and the round trip's (val_loss, val_bpb), as logged."""
    summary = parse_run_log(str(log))
    return [(s["step"], s["train_loss"]) for s in summary.steps], summary.final_roundtrip()


@pytest.mark.slow
def test_packed_file_matches_library_run(tmp_path, sample_data):
    real_package_or_skip()
    from golf.recipes import RECIPES

    src = pack_source(ROOT, "default", dataclasses.asdict(RECIPES["default"]))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # MAX_WALLCLOCK_SECONDS far beyond the run: the time-based LR multiplier stays exactly 1.0, so the
    # 6 steps are the same computation in both runs whatever the machine's speed.
    env.update(sample_data, PRESET="smoke", SEED="7", ITERATIONS="6", MAX_WALLCLOCK_SECONDS="100000",
               QUANT_RESERVE_SECONDS="1000",
               TRAIN_BATCH_TOKENS="2048", VAL_MAX_TOKENS="2048", COMPILE_WARMUP_STEPS="1", TRAIN_LOG_EVERY="1",
               MODEL_DIM="64", GPTQ_CALIB_BATCHES="1", SW_STRIDE="256")
    lib = tmp_path / "lib"
    lib.mkdir()
    res = subprocess.run([sys.executable, "-c", f"from golf.train import run; run({str(ROOT / 'golf/train.py')!r})"],
                         cwd=ROOT, env=dict(env, OUT_DIR=str(lib), RUN_ID="lib", PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    want = run_lines(lib / "logs/lib.txt")
    assert len(want[0]) == 6

    for name, data in (("packed", src.encode("utf-8")), ("compressed", self_extracting(src))):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "train_gpt.py").write_bytes(data)
        res = run_isolated(run_dir / "train_gpt.py", dict(env, OUT_DIR=str(run_dir), RUN_ID=name), timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
        assert run_lines(run_dir / "logs" / f"{name}.txt") == want, name
        log = (run_dir / "logs" / f"{name}.txt").read_text(encoding="utf-8")
        assert "recipe:default" in log
        # The log holds the source that ran: the minified one for the shipped file, not its Latin-1 bytes.
        assert (minify_for_shipping(src) if name == "compressed" else src) in log


def test_shipped_source_keeps_the_names_the_tools_read_and_triton_annotations():
    src = ('"""Module doc."""\n\nimport dataclasses\nimport triton\n\n\n@dataclasses.dataclass(frozen=True)\n'
           'class Config:\n    """Env vars named after the fields."""\n    model_dim: int = 512  # MODEL_DIM\n\n\n'
           'def from_env(cfg: Config, *, scale: float = 2.0) -> int:\n    # a whole-line comment\n'
           '    hidden_width: int = cfg.model_dim * scale\n    return hidden_width  # trailing\n\n\n'
           '@triton.jit\ndef kernel(x_ptr, BLOCK: tl.constexpr):\n    offsets = x_ptr * BLOCK + tl.arange(0, BLOCK)\n'
           '    return tl.where(offsets < BLOCK, offsets, BLOCK)\n\n\ndef load_val_tokens(pattern):\n    return pattern\n'
           '\n\ndef widest_helper_name(width):\n    return width\n')
    out = minify_for_shipping(src)
    for gone in ("Module doc", "Env vars", "whole-line", "trailing", "MODEL_DIM", "hidden_width", "cfg: Config",
                 "-> int", "scale: float", "widest_helper_name", "def kernel"):
        assert gone not in out, gone
    # Config's fields (its env vars), the globals tools read (SHIPPED_NAMES) and those the static audit takes for val
    # data by name, keyword-passable arguments and triton's constexpr annotations stay; other globals are renamed.
    # A kernel's arguments are never aliased by a local: triton needs `tl.arange(0, BLOCK)` on the constexpr itself.
    for kept in ("model_dim:int=512", "def from_env(cfg,*,scale=2.):", "(x_ptr,BLOCK:tl.constexpr):",
                 "tl.arange(0,BLOCK)", "def load_val_tokens(pattern):"):
        assert kept in out, (kept, out)
    ns = {"tl": types.SimpleNamespace(constexpr=int)}
    exec(compile(out.replace("import triton\n", "").replace("@triton.jit\n", ""), "<shipped>", "exec"), ns)
    assert ns["from_env"](ns["Config"](), scale=0.5) == 256 and ns["Config"].__dataclass_fields__["model_dim"]


@pytest.mark.parametrize("data", [bytes(range(256)), b'"', b'""', b'"""', b'a"""b""', b"\\", b"\x00", b"\x007",
                                  b"\x008", b"\r\n\r", b"\n\n", b"\\\"", bytes(range(256))[::-1] * 3])
def test_latin1_literal_reads_back_every_byte(tmp_path, data):
    lit = latin1_literal(data)
    path = tmp_path / "lit.py"
    path.write_bytes(f"# coding: latin-1\nprint({lit}.encode('latin-1').hex())\n".encode("latin-1"))
    res = subprocess.run([sys.executable, "-W", "error", str(path)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == data.hex(), res.stderr


def test_latin1_literal_escapes_only_what_the_tokenizer_cannot_hold():
    # NUL, CR and backslash take one extra byte each; a quote followed by "#" needs none.
    assert len(latin1_literal(bytes(range(256)))) == 6 + 256 + 3
    assert latin1_literal(b'a"b\n') == '"""a"b\n"""' and latin1_literal(b'""') == '"""\\"\\""""'


# Incompressible lines: the static audit looks for payloads in literals of 200 characters or more.
FILLER = b"".join(b"# %s\n" % hashlib.sha256(b"%d" % i).hexdigest().encode() for i in range(8))


@pytest.mark.parametrize("codec", COMPRESSORS)
def test_each_compressor_makes_a_runnable_file(tmp_path, codec):
    out = tmp_path / "train_gpt.py"
    code = b"import os, sys\nprint(__name__, os.path.samefile(__file__, sys.argv[0]), len(sys.argv))\n" + FILLER
    out.write_bytes(loader(codec, COMPRESSORS[codec](code)))
    for res in (run_isolated(out), subprocess.run([sys.executable, out.name], cwd=tmp_path, capture_output=True, text=True)):
        assert res.returncode == 0 and res.stdout.split() == ["__main__", "True", "1"], res.stderr
    assert unpacked_sources(out)[-1] == (f"{codec}+latin-1 literal at {out} line 3", code.decode())


def test_corrupt_payload_is_one_clear_error(tmp_path):
    payload = COMPRESSORS["brotli"](b"import os\nprint('ran ' + os.sep)\n" + FILLER)
    bad = tmp_path / "train_gpt.py"
    bad.write_bytes(loader("brotli", payload[:40] + bytes([payload[40] ^ 0x55]) + payload[41:]))
    # The readers say which literal is broken, in one line.
    with pytest.raises(AuditInputError, match=r"train_gpt.py: exec\(\) at line \d+ runs code that could not be "
                                              r"decoded statically .*literal at line 3 is no payload"):
        audit_file(bad)
    # Run, it stops in the loader, before any packed code: brotli has no checksum, so the damage shows as the
    # decompressor's error or as bytes that are not UTF-8 (as here); the file's sha256 in the log names what ran.
    res = run_isolated(bad)
    assert res.returncode == 1 and "ran" not in res.stdout
    assert re.search(r'File "train_gpt.py", line \d+, in <module>\n.*encode\(.latin-1.\)', res.stderr), res.stderr
    assert re.match(r"(brotli\.error|UnicodeDecodeError): ", res.stderr.strip().splitlines()[-1]), res.stderr


# Each triton kernel of the shipped file against its torch twin, in triton's interpreter: the minified source is what
# triton.jit compiles (python-minifier's `D=BLOCK` alias once made arange fail there).
SHIPPED_KERNELS = """
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("shipped", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
assert m.TRITON_AVAILABLE and m.triton_interpreting()
torch.manual_seed(0)
def gap(fn, twin, *xs):
    outs = []
    for f in (fn, twin):
        leaves = [x.clone().requires_grad_(True) for x in xs]
        y = f(*leaves)
        y.sum().backward()
        outs.append([y.detach()] + [x.grad for x in leaves])
    return max((a - b).abs().max().item() for a, b in zip(*outs))
gqa = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
    q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
t = torch.randint(0, 300, (8,))
print(gap(lambda x: m.LeakyReluSquareTriton.apply(x, 1024), m.leaky_relu_sq_torch, torch.randn(3000)),
      gap(lambda q, k, v: m.flash_attention(q, k, v, block_m=32, block_n=32), gqa,
          torch.randn(1, 4, 64, 16), torch.randn(1, 2, 64, 16), torch.randn(1, 2, 64, 16)),
      gap(lambda z: m.softcap_cross_entropy_triton(z, t, 30.0), lambda z: m.softcap_cross_entropy_torch(z, t, 30.0),
          torch.randn(8, 300)))
"""


def test_shipped_triton_kernels_run_in_the_interpreter(tmp_path):
    real_package_or_skip()
    pytest.importorskip("triton")
    script = tmp_path / "kernels.py"
    script.write_text(SHIPPED_KERNELS)
    res = subprocess.run([sys.executable, str(script), str(ROOT / "train_gpt.py")], capture_output=True, text=True,
                         env=dict(os.environ, TRITON_INTERPRET="1"), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert all(float(gap) < 1e-5 for gap in res.stdout.split()), res.stdout


def test_the_shipped_file_keeps_every_name_preflight_reads():
    # tools/preflight.py reads these from the loaded module (`ns.GPT`, the list load_training_file checks): renamed,
    # preflight would refuse the shipped file.
    tree = ast.parse((ROOT / "tools/preflight.py").read_text())
    read = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "ns"}
    checked = {c.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") ==
               "needed" for c in ast.walk(n.value) if isinstance(c, ast.Constant)}
    assert read and checked and read | checked <= set(SHIPPED_NAMES), sorted((read | checked) - set(SHIPPED_NAMES))


def test_committed_train_gpt_fits_its_code_budget_and_reads_back():
    # Issue 24: the 1.0611 record's stack (recipe pr1855) in at most 32,000 bytes, its own code counted 31,999; the
    # default, PR #2101's stack (issue 26: AWQ-lite, AsymLogit and the size fallback on top), in 32,500, where #2101's
    # own code counted 34,205.
    real_package_or_skip()
    shipped, readable = ROOT / "train_gpt.py", ROOT / "train_gpt.readable.py"
    assert shipped.stat().st_size <= 32_500, f"{shipped}: {shipped.stat().st_size} bytes, over 32,500"
    from golf.recipes import RECIPES
    pr1855 = len(self_extracting(pack_source(ROOT, "pr1855", dataclasses.asdict(RECIPES["pr1855"]))))
    assert pr1855 <= 32_000, f"recipe pr1855 packs to {pr1855} bytes, over 32,000"
    units = unpacked_sources(shipped)
    assert len(units) == 2 and units[1][1] == minify_for_shipping(readable.read_text(encoding="utf-8"))
    # The static audit finds the same structure in the shipped form as in the readable one.
    verdicts = lambda report: [(c["check"], c["verdict"], len(c["recognised"])) for c in report["checks"]]
    assert verdicts(audit_file(shipped)) == verdicts(audit_file(readable))
