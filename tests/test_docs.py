"""The documentation site: complete, buildable with --strict, and its code runs.

- `docs/api.md` lists every public name of `gdflow`, `gdflow.problems` and
  `gdflow.datasets` (and nothing else), and each has a docstring of its own;
- `mkdocs build --strict` succeeds, with every outgoing HTTP(S) request sent to a dead
  proxy so that nothing can be fetched during the build;
- the Python code of every docs page runs, and where a ```` ```text ```` block follows a
  ```` ```python ```` block it is that block's printed output;
- the doctest examples (`>>>`) in the public docstrings run and print what they say
  (x64 on, NORMALIZE_WHITESPACE and ELLIPSIS);
- `tools/convert_docstrings.py` turns Sphinx markup into the house Markdown, only inside
  docstrings, idempotently.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import importlib.util
import inspect
import io
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import gdflow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


# ---------------------------------------------------------------- the public names


def _reexported_modules() -> set[str]:
    """Submodules that `gdflow/__init__.py` re-exports by name (`from . import x as x`)."""
    tree = ast.parse((ROOT / "gdflow" / "__init__.py").read_text(encoding="utf-8"))
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module is None and node.level == 1:
            out |= {a.asname or a.name for a in node.names}
    return out


def public_names() -> list[str]:
    """Dotted names of everything public: gdflow's own objects and its data submodules."""
    names = []
    modules = _reexported_modules()
    for name in dir(gdflow):
        if name.startswith("_"):
            continue
        obj = getattr(gdflow, name)
        if isinstance(obj, types.ModuleType):
            if name in modules:
                names.append(f"gdflow.{name}")
                sub = obj
                for sname in dir(sub):
                    sobj = getattr(sub, sname)
                    if sname.startswith("_") or isinstance(sobj, types.ModuleType):
                        continue
                    if getattr(sobj, "__module__", "").startswith("gdflow"):
                        names.append(f"gdflow.{name}.{sname}")
            continue  # a submodule bound as a side effect of an import
        # Names imported from other libraries (e.g. importlib's PackageNotFoundError)
        # are not gdflow's API.
        if getattr(obj, "__module__", "").startswith("gdflow"):
            names.append(f"gdflow.{name}")
    return sorted(names)


def api_entries() -> list[str]:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    return re.findall(r"^::: (\S+)", text, flags=re.M)


def resolve(dotted: str):
    obj = gdflow
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def test_api_reference_is_complete():
    listed = api_entries()
    dupes = sorted({n for n in listed if listed.count(n) > 1})
    assert not dupes, f"docs/api.md lists these twice: {dupes}"
    missing = sorted(set(public_names()) - set(listed))
    extra = sorted(set(listed) - set(public_names()))
    assert not missing, f"public names missing from docs/api.md (add `::: NAME`): {missing}"
    assert not extra, f"docs/api.md lists names that are not public: {extra}"


def _own_doc(obj) -> str | None:
    doc = (
        obj.__doc__ if isinstance(obj, type | types.ModuleType) else getattr(obj, "__doc__", None)
    )
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")
        # dataclasses (and so equinox Modules) invent "Name(field, ...)" when none is given.
        if doc and re.match(rf"^{re.escape(obj.__name__)}\(.*\)$", doc.strip(), re.S):
            return None
    return doc.strip() if isinstance(doc, str) and doc.strip() else None


def test_every_public_name_has_a_docstring():
    undocumented = [n for n in public_names() if _own_doc(resolve(n)) is None]
    assert not undocumented, f"public names without a docstring of their own: {undocumented}"


# ---------------------------------------------------------------- the site builds


def test_site_builds_strict(tmp_path):
    for mod in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(mod.split(".")[0]) is None:
            pytest.skip(
                f"{mod} is not installed: install the docs extra (pip install -e '.[docs]')"
            )
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    env = dict(os.environ)
    # Nothing may be fetched during the build: route every request to a closed port.
    dead = "http://127.0.0.1:9"
    env.update(HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead,
               NO_PROXY="", no_proxy="", NO_MKDOCS_2_WARNING="1")  # fmt: skip
    env.pop("GDFLOW_DOCS_SRC", None)  # build from this checkout's package
    proc = subprocess.run(
        [
            mkdocs,
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    problems = [line for line in log.splitlines() if re.match(r"^(WARNING|ERROR)", line)]
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems or [log])
    html = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in public_names():
        assert f'id="{name}"' in html, f"{name} has no entry in the built API reference"


# ---------------------------------------------------------------- the pages' code runs


_FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)


def page_blocks(path: Path) -> list[tuple[str, str | None]]:
    """(code, expected output or None) for each ```python block of a page, in order."""
    text = path.read_text(encoding="utf-8")
    fences = list(_FENCE.finditer(text))
    out = []
    for i, f in enumerate(fences):
        if f.group("info").strip() != "python":
            continue
        want = None
        nxt = fences[i + 1] if i + 1 < len(fences) else None
        if nxt is not None and nxt.group("info").strip() == "text":
            if not text[f.end() : nxt.start()].strip():
                want = nxt.group("body")
        out.append((f.group("body"), want))
    return out


PAGES = sorted(p.name for p in DOCS.glob("*.md") if page_blocks(p))


@pytest.mark.parametrize("page", PAGES)
def test_docs_page_code_runs(page):
    checker = doctest.OutputChecker()
    namespace: dict = {"__name__": f"docs_{page.removesuffix('.md').replace('-', '_')}"}
    for k, (code, want) in enumerate(page_blocks(DOCS / page)):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, f"docs/{page} (block {k + 1})", "exec"), namespace)
        got = buf.getvalue()
        if want is not None and not checker.check_output(want, got, FLAGS):
            example = doctest.Example(code, want)
            pytest.fail(
                f"docs/{page} block {k + 1} printed something else:\n"
                + checker.output_difference(example, got, FLAGS)
            )


# ---------------------------------------------------------------- docstring examples


class _FencedParser(doctest.DocTestParser):
    """Doctest examples written inside ```python fences: the fence lines are not output."""

    def parse(self, string, name="<string>"):
        string = re.sub(r"^[ \t]*```[\w-]*[ \t]*$", "", string, flags=re.M)
        return super().parse(string, name)


def docstring_tests() -> list[doctest.DocTest]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    finder = doctest.DocTestFinder(parser=_FencedParser(), recurse=True, exclude_empty=True)
    tests = []
    for name in public_names():
        obj = resolve(name)
        # As plain doctest does: an example sees the globals of the module defining it.
        home = obj if isinstance(obj, types.ModuleType) else inspect.getmodule(obj)
        globs = dict(vars(home)) if home is not None else {}
        if isinstance(obj, types.ModuleType):
            found = finder.find(obj, name, module=False, globs=globs)
            found = [t for t in found if t.name == name]  # members are listed themselves
        else:
            found = finder.find(obj, name, module=False, globs=globs)
        for t in found:
            if not t.examples:
                continue
            t.globs.update(gf=gdflow, gdflow=gdflow, jax=jax, jnp=jnp, np=np)
            tests.append(t)
    return tests


def test_docstring_examples_run():
    tests = docstring_tests()
    assert tests, "no doctest examples found in the public docstrings"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    failures = []
    for t in tests:
        out = io.StringIO()
        result = runner.run(t, out=out.write)
        if result.failed:
            failures.append(out.getvalue())
    assert not failures, "docstring examples failed:\n" + "\n".join(failures)


# ---------------------------------------------------------------- the conversion tool


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        "convert_docstrings", ROOT / "tools" / "convert_docstrings.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SAMPLE = '''\
"""Module about :func:`gd` and ``code``.

Solve::

    x = 1
"""

S = ":func:`gd` stays: not a docstring"


def f(x):
    r"""Step :math:`\\theta_{k+1} = \\theta_k - \\eta g`, see :class:`~gdflow.Problem`.

    .. math::

        \\dot\\theta = -\\nabla L(\\theta),

        L = 0.

    - ``x``: passed to :func:`jax.grad` and :meth:`Trajectory.evaluate`; not
      :func:`private_helper`.
    """
    return ":math:`x` in code is untouched"
'''

EXPECTED = '''\
"""Module about [`gdflow.gd`][] and `code`.

Solve:

```python
x = 1
```
"""

S = ":func:`gd` stays: not a docstring"


def f(x):
    r"""Step $\\theta_{k+1} = \\theta_k - \\eta g$, see [`gdflow.Problem`][].

    $$
    \\dot\\theta = -\\nabla L(\\theta),
    $$

    $$
    L = 0.
    $$

    - `x`: passed to `jax.grad` and [`gdflow.Trajectory.evaluate`][]; not
      `private_helper`.
    """
    return ":math:`x` in code is untouched"
'''


def test_convert_docstrings_tool(tmp_path):
    tool = _load_tool()
    pkg = tmp_path / "gdflow"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        '"""Package."""\nfrom ._x import Problem as Problem, Trajectory as Trajectory, gd as gd\n'
    )
    mod = pkg / "_x.py"
    mod.write_text(SAMPLE)
    assert tool.main(["--check", str(mod)]) == 1
    assert mod.read_text() == SAMPLE  # --check changes nothing
    assert tool.main([str(pkg)]) == 0
    assert mod.read_text() == EXPECTED
    assert tool.main(["--check", str(pkg)]) == 0  # idempotent: nothing left to convert
    ast.parse(mod.read_text())
    # Runs on a file with no package around it, trusting bare targets.
    assert tool.convert_text(":func:`gd`") == "[`gdflow.gd`][]"
    assert tool.convert_text("```python\nx\n```") == "```python\nx\n```"


def test_package_docstrings_are_markdown():
    """One docstring format: no Sphinx roles or directives left in the package."""
    tool = _load_tool()
    stale = []
    for path in sorted((ROOT / "gdflow").rglob("*.py")):
        src = path.read_text(encoding="utf-8")
        if tool.convert_source(src, tool.Resolver(tool._package_root(path))) != src:
            stale.append(str(path.relative_to(ROOT)))
    assert not stale, (
        "docstrings with Sphinx markup (run `python tools/convert_docstrings.py gdflow`): "
        + ", ".join(stale)
    )
