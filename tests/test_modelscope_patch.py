"""Tests for modelscope_patch (the gast ``ClassDef.type_params`` guard for old modelscope)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import modelscope_patch as mp

ROOT = Path(__file__).resolve().parents[1]
OLD_PY = sys.version_info < (3, 12)

# Copy of the gast 0.5.5 / 0.6.0 defect on Python < 3.12: ClassDef lists "type_params" in
# _fields, but the ast->gast converter never sets it (FunctionDef does get []).
FAKE_GAST = """
import ast

_POS = ("lineno", "col_offset", "end_lineno", "end_col_offset")


class ClassDef(ast.stmt):
    _fields = ("name", "bases", "keywords", "body", "decorator_list", "type_params")
    _attributes = _POS


class FunctionDef(ast.stmt):
    _fields = ("name", "args", "body", "decorator_list", "returns", "type_comment", "type_params")
    _attributes = _POS


class AsyncFunctionDef(FunctionDef):
    pass


class _ToGast(ast.NodeTransformer):
    def _convert(self, node, cls, **extra):
        self.generic_visit(node)
        fields = {f: getattr(node, f) for f in node._fields if f not in extra}
        return ast.copy_location(cls(**fields, **extra), node)

    def visit_ClassDef(self, node):
        return self._convert(node, ClassDef)

    def visit_FunctionDef(self, node):
        return self._convert(node, FunctionDef, type_params=[])

    def visit_AsyncFunctionDef(self, node):
        return self._convert(node, AsyncFunctionDef, type_params=[])


def parse(source):
    return _ToGast().visit(ast.parse(source))
"""


def run_py(code: str, tmp_path: Path, extra_path: Path | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (repo root importable); it must print one JSON line."""
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["MODELSCOPE_CACHE"] = str(tmp_path / "ms_cache")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip(), proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- needs_patch


@pytest.mark.parametrize(
    ("py", "ms", "gast", "expected"),
    [
        # affected: modelscope < 1.16 (gast.parse) + gast 0.5.5/0.6.0 + Python < 3.12
        ((3, 10), "1.10.0", "0.6.0", True),
        ((3, 11), "1.10.0", "0.5.5", True),
        ((3, 10, 14), "1.15.0", "0.5.5", True),
        ((3, 11, 7), "1.15.0", "0.6.0", True),
        ("3.11.9", "1.14.0", "0.6.0", True),
        ((3, 8), "1.9.5", "0.6.0", True),
        # gast outside [0.5.5, 0.7.0): no type_params in _fields, or converter sets it
        ((3, 11), "1.15.0", "0.5.4", False),
        ((3, 11), "1.15.0", "0.7.0", False),
        ((3, 10), "1.10.0", "0.4.0", False),
        # modelscope >= 1.16 parses with ast, not gast
        ((3, 10), "1.16.0", "0.6.0", False),
        ((3, 11), "1.16.1", "0.6.0", False),
        ((3, 11), "1.20.0", "0.6.0", False),
        ((3, 10), "1.40.2", "0.5.5", False),
        # Python >= 3.12 sets type_params itself
        ((3, 12), "1.15.0", "0.6.0", False),
        ((3, 13, 1), "1.10.0", "0.5.5", False),
        ((3, 14), "1.15.0", "0.6.0", False),
        # not installed / unparsable
        ((3, 11), None, "0.6.0", False),
        ((3, 11), "1.15.0", None, False),
        ((3, 11), "garbage", "0.6.0", False),
    ],
)
def test_needs_patch_matrix(py, ms, gast, expected):
    assert mp.needs_patch(py, ms, gast) is expected


def test_needs_patch_accepts_version_info_and_prerelease_strings():
    assert mp.needs_patch(sys.version_info, "1.40.2", "0.6.0") is False
    assert mp.needs_patch((3, 11, 7, "final", 0), "1.15.0rc1", "0.6.0") is True
    assert mp.needs_patch((3, 11), "v1.15.0", "0.6.0.post1") is True
    assert mp.needs_patch((3, 11), "1.16.0rc1", "0.6.0") is False


def test_supported_combinations_never_need_patch():
    # Supported here: Python >= 3.10, modelscope >= 1.20, whatever gast is around.
    for minor in (10, 11, 12, 13):
        for ms in ("1.20.0", "1.25.1", "1.40.2", "2.0.0"):
            for gast in ("0.5.4", "0.5.5", "0.6.0", "0.7.0", None):
                assert mp.needs_patch((3, minor), ms, gast) is False


def test_needs_patch_defaults_read_installed_metadata(monkeypatch):
    seen = []

    def fake_version(dist):
        seen.append(dist)
        return {"modelscope": "1.15.0", "gast": "0.6.0"}[dist]

    monkeypatch.setattr(mp.importlib.metadata, "version", fake_version)
    assert mp.needs_patch((3, 11)) is True
    assert mp.needs_patch((3, 12)) is False
    assert set(seen) == {"modelscope", "gast"}

    def missing(dist):
        raise mp.importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(mp.importlib.metadata, "version", missing)
    assert mp.needs_patch((3, 11)) is False
    # explicit versions bypass metadata entirely
    assert mp.needs_patch((3, 11), "1.15.0", "0.5.5") is True


def test_needs_patch_default_python_is_running_interpreter(monkeypatch):
    monkeypatch.setattr(mp.sys, "version_info", (3, 11, 0, "final", 0))
    assert mp.needs_patch(None, "1.15.0", "0.6.0") is True
    monkeypatch.setattr(mp.sys, "version_info", (3, 12, 0, "final", 0))
    assert mp.needs_patch(None, "1.15.0", "0.6.0") is False


def test_importing_module_has_no_side_effects(tmp_path):
    out = run_py(
        """
        import ast, io, json, sys, contextlib
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            import modelscope_patch
        print(json.dumps({
            "stdout": buf.getvalue(),
            "gast_loaded": "gast" in sys.modules,
            "modelscope_loaded": "modelscope" in sys.modules,
            "ast_touched": [n for n in ("ClassDef", "FunctionDef", "AsyncFunctionDef")
                            if modelscope_patch.MARKER in vars(getattr(ast, n))
                            or (sys.version_info < (3, 12) and "type_params" in vars(getattr(ast, n)))],
        }))
        """,
        tmp_path,
    )
    assert out == {"stdout": "", "gast_loaded": False, "modelscope_loaded": False, "ast_touched": []}


# --------------------------------------------------------------------------- apply()


def test_apply_on_installed_combination_matches_needs_patch(tmp_path):
    out = run_py(
        """
        import ast, io, json, sys, contextlib
        import modelscope_patch as mp
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            expected = mp.needs_patch()
            first = mp.apply()
            second = mp.apply()
        node = ast.parse("class A: pass").body[0]
        print(json.dumps({
            "expected": expected, "first": first, "second": second,
            "stdout": buf.getvalue(),
            "modelscope_loaded": "modelscope" in sys.modules,
            "ast_class_attrs": [n for n in ("ClassDef", "FunctionDef", "AsyncFunctionDef")
                                if "type_params" in vars(getattr(ast, n))
                                or mp.MARKER in vars(getattr(ast, n))],
            "node_has_type_params": hasattr(node, "type_params"),
            "applied": mp.is_applied(),
        }))
        """,
        tmp_path,
    )
    assert out["stdout"] == ""
    assert out["first"] is out["expected"]
    assert out["second"] is out["expected"]
    assert out["applied"] is out["expected"]
    assert out["modelscope_loaded"] is False  # decided from metadata only
    assert out["ast_class_attrs"] == []  # the stdlib ast classes are never patched
    assert out["node_has_type_params"] is (sys.version_info >= (3, 12))


def test_installed_environment_is_not_affected():
    # This project pins modelscope>=1.20, which does not use gast: the guard must be a no-op.
    assert mp.needs_patch() is False


def test_apply_without_need_does_not_import_gast(monkeypatch):
    monkeypatch.setattr(mp, "needs_patch", lambda: False)
    monkeypatch.delitem(sys.modules, "gast", raising=False)
    assert mp.apply() is False
    assert "gast" not in sys.modules


def test_apply_forced_without_gast_returns_false(monkeypatch):
    monkeypatch.setitem(sys.modules, "gast", None)  # makes `import gast` raise ImportError
    assert mp.apply(force=True) is False


FORCED_SCRIPT = """
    import ast, io, json, sys, contextlib
    import gast
    import modelscope_patch as mp

    SRC = "class A(object):\\n    def f(self): pass\\nclass B: pass\\n"

    def scan():
        from modelscope.utils.ast_utils import AstScanning
        try:
            scanner = AstScanning()
            scanner._refresh()  # what generate_ast() does before scan_import()
            scanner.scan_import(gast.parse(SRC), show_offsets=False)
            return "ok"
        except AttributeError as e:
            return str(e)

    before_has = hasattr(gast.parse("class A: pass").body[0], "type_params")
    before_scan = scan()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        first = mp.apply(force=True)
        descr = {n: vars(getattr(gast, n)).get("type_params")
                 for n in ("ClassDef", "FunctionDef", "AsyncFunctionDef")}
        second = mp.apply(force=True)
        third = mp.apply()
    same = all(vars(getattr(gast, n)).get("type_params") is d for n, d in descr.items())

    body = gast.parse(SRC).body
    a, b = body[0], body[1]
    a.type_params.append("x")  # per-instance list, not a shared default
    print(json.dumps({
        "before_has": before_has,
        "before_scan": before_scan,
        "first": first, "second": second, "third": third,
        "same_descriptor": same,
        "stdout": buf.getvalue(),
        "marker": getattr(gast.ClassDef, mp.MARKER, False),
        "applied": mp.is_applied(),
        "class_tp": gast.parse("class A: pass").body[0].type_params,
        "func_tp": gast.parse("def f(): pass").body[0].type_params,
        "a_tp": a.type_params, "b_tp": b.type_params,
        "ast_untouched": all("type_params" not in vars(getattr(ast, n)) or sys.version_info >= (3, 12)
                             for n in ("ClassDef", "FunctionDef", "AsyncFunctionDef")),
        "ast_node_has": hasattr(ast.parse("class A: pass").body[0], "type_params"),
        "after_scan": scan(),
    }))
"""


@pytest.mark.skipif(not OLD_PY, reason="Python >= 3.12 ast sets type_params itself")
def test_forced_patch_fixes_gast_defect_and_is_idempotent(tmp_path):
    fake = tmp_path / "fakegast"
    fake.mkdir()
    (fake / "gast.py").write_text(FAKE_GAST)
    out = run_py(FORCED_SCRIPT, tmp_path, extra_path=fake)

    # The stand-in reproduces the real crash inside modelscope's own AST scanner ...
    assert out["before_has"] is False
    assert "type_params" in out["before_scan"]
    # ... and the patch removes it.
    assert out["after_scan"] == "ok"
    assert out["class_tp"] == []
    assert out["func_tp"] == []
    assert out["a_tp"] == ["x"] and out["b_tp"] == []
    assert out["first"] is True and out["second"] is True
    assert out["third"] is False  # unforced: not needed for the installed modelscope, changes nothing
    assert out["same_descriptor"] is True
    assert out["marker"] is True and out["applied"] is True
    assert out["stdout"] == ""
    assert out["ast_untouched"] is True
    assert out["ast_node_has"] is False


@pytest.mark.skipif(not OLD_PY, reason="Python >= 3.12 ast sets type_params itself")
@pytest.mark.skipif(importlib.util.find_spec("gast") is None, reason="real gast not installed")
def test_forced_patch_with_real_gast(tmp_path):
    gast = pytest.importorskip("gast")
    if "type_params" not in gast.ClassDef._fields:
        pytest.skip(f"gast {mp._installed('gast')} does not declare type_params (nothing to patch)")
    out = run_py(FORCED_SCRIPT, tmp_path)
    if mp.needs_patch(sys.version_info, "1.15.0", mp._installed("gast")):
        # an affected gast (0.5.5 / 0.6.0): the unpatched scan must reproduce the crash
        assert out["before_has"] is False and "type_params" in out["before_scan"]
    assert out["after_scan"] == "ok"
    assert out["class_tp"] == [] and out["func_tp"] == []
    assert out["a_tp"] == ["x"] and out["b_tp"] == []
    assert out["first"] is True and out["second"] is True and out["same_descriptor"] is True
    assert out["stdout"] == ""
    assert out["ast_untouched"] is True


def test_patch_classes_only_touches_classes_declaring_the_field():
    class Declares(ast.stmt):
        _fields = ("name", "type_params")

    class Plain(ast.stmt):
        _fields = ("name",)

    class Ns:
        ClassDef = Declares
        FunctionDef = Plain

    targets = mp._target_classes(Ns)
    assert targets == [Declares]
    assert mp._patch_classes(targets) == [Declares]
    assert mp._patch_classes(targets) == []  # idempotent
    node = Declares(name="x")
    assert node.type_params == [] and "type_params" in vars(node)
    assert Declares(name="y", type_params=[1]).type_params == [1]
    assert not hasattr(Plain(name="x"), "type_params")


# --------------------------------------------------------------------------- modelscope itself


@pytest.mark.skipif(importlib.util.find_spec("modelscope") is None, reason="modelscope not installed")
def test_modelscope_ast_scanning_works_after_apply(tmp_path):
    out = run_py(
        f"""
        import json, logging
        logging.disable(logging.CRITICAL)
        import modelscope_patch
        applied = modelscope_patch.apply()
        import modelscope
        from modelscope.utils.ast_utils import AstScanning, load_index
        src = {str(tmp_path / "sample.py")!r}
        with open(src, "w") as f:
            f.write("import os\\nclass A(object):\\n    def f(self): pass\\n"
                    "async def g(): pass\\n")
        scanned = AstScanning().generate_ast(src)
        index = load_index(force_rebuild=True, indexer_file_dir={str(tmp_path / "idx")!r})
        print(json.dumps({{"applied": applied, "imports": sorted(scanned["imports"]),
                          "decorators": scanned["decorators"],
                          "components": len(index["index"])}}))
        """,
        tmp_path,
    )
    assert out["applied"] is mp.needs_patch()
    assert out["imports"] == ["os"] and out["decorators"] == []
    assert out["components"] > 100  # full rebuild of modelscope's registry index succeeded
