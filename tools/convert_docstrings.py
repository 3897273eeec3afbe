r"""Rewrite the docstrings of Python files from Sphinx (reST) markup to the house Markdown.

The house format (see `shared/STYLE.md`) is Markdown rendered by mkdocstrings:
cross-references as `[`gdflow.gd`][]`, inline math as `$x$`, display math in `$$`
blocks, code as single backticks. This tool rewrites, inside docstrings only:

| Sphinx | Markdown |
|---|---|
| `:func:`gdflow.x``, `:func:`x``, `:class:`~gdflow.x``, `:meth:`, `:mod:`, `:attr:`, `:exc:`, `:obj:`, `:data:` | `[`gdflow.x`][]` when `x` is a name gdflow exports, else `` `x` `` |
| `:math:`x`` | `$x$` |
| `.. math::` block (its indented body; blank lines separate equations) | `$$ ... $$` block(s) at the directive's indentation |
| ` ``code`` ` | `` `code` `` |
| a paragraph ending in `::` followed by an indented block | the paragraph ending in `:` and the block in a ```` ```python ```` fence |

A bare target `x` (no `gdflow.` prefix) becomes `gdflow.x` when `x` (or, for
`Trajectory.evaluate`, its first part) is exported by `gdflow/__init__.py`, or
`gdflow.problems.x` / `gdflow.datasets.x` when exported there; targets in other libraries
(`jax.grad`, `optax.adam`, ...) and names the package does not export become plain code,
since the site has no inventories of other projects and a reference to a private name
would not resolve. The exports are read statically (with `ast`) from the package that
holds the file, found by walking up from the file to the topmost folder with an
`__init__.py`; nothing is imported.

The rewrite is idempotent (the output has no Sphinx forms left) and touches nothing
outside docstrings: the docstrings are found with `ast` (module, class and function
docstrings, and attribute docstrings: a string statement right after an assignment in a
module or class body), and only the text between their quotes is replaced; the quotes,
the string prefix and every other byte of the file stay as they were. f-strings, byte
strings and implicitly concatenated literals are left alone.

Usage:

    python tools/convert_docstrings.py FILE_OR_DIR ...           # rewrite in place
    python tools/convert_docstrings.py --check FILE_OR_DIR ...   # exit 1 if any would change
    python tools/convert_docstrings.py --diff FILE_OR_DIR ...    # print a unified diff
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path

ROLES = ("func", "class", "meth", "mod", "attr", "exc", "obj", "data", "const", "ref")
# Libraries whose names become plain code (the site has no inventories for them).
EXTERNAL = {
    "jax", "jnp", "np", "numpy", "scipy", "optax", "diffrax", "equinox", "eqx", "lineax",
    "jaxtyping", "torch", "math", "matplotlib", "plt", "sklearn", "tqdm", "dask", "typing",
    "collections", "functools", "dataclasses", "builtins", "warnings",
}  # fmt: skip

_ROLE_RE = re.compile(r":(?:py:)?(?P<role>" + "|".join(ROLES) + r"):`(?P<body>[^`]+)`", re.DOTALL)
_MATH_RE = re.compile(r":math:`(?P<body>[^`]+)`", re.DOTALL)
# ``code`` (exactly two backticks each side, not part of a longer run such as a fence).
_LITERAL_RE = re.compile(r"(?<!`)``(?!`)(?P<body>[^`]+?)(?<!`)``(?!`)", re.DOTALL)
_MATH_DIRECTIVE_RE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")
_LITERAL_PARA_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<text>\S.*?)(?P<sep>\s*)::[ \t]*$")


# ---------------------------------------------------------------- exports (static)


def _package_root(path: Path) -> Path | None:
    """The topmost folder above `path` (inclusive of its parents) holding `__init__.py`."""
    root = None
    d = path.parent if path.is_file() or path.suffix == ".py" else path
    while (d / "__init__.py").exists():
        root = d
        d = d.parent
    return root


def _exports(init: Path) -> set[str]:
    """Names a package's `__init__.py` binds at its top level (imports and assignments)."""
    if not init.exists():
        return set()
    tree = ast.parse(init.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                names.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                names.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names.add(t.id)
    return {n for n in names if not n.startswith("_")}


class Resolver:
    """Maps a Sphinx target to a public dotted name of the package, or None."""

    def __init__(self, root: Path | None, package: str = "gdflow"):
        self.package = root.name if root is not None else package
        self.top = _exports(root / "__init__.py") if root is not None else set()
        self.sub: dict[str, set[str]] = {}
        if root is not None:
            for name in sorted(self.top):
                init = root / name / "__init__.py"
                mod = root / f"{name}.py"
                if init.exists():
                    self.sub[name] = _exports(init)
                elif mod.exists():
                    self.sub[name] = _exports(mod) | _defs(mod)

    def resolve(self, target: str) -> str | None:
        target = target.strip().lstrip("~.").rstrip("()")
        parts = target.split(".")
        if not parts or not all(p.isidentifier() for p in parts):
            return None
        if parts[0] == self.package:
            parts = parts[1:]
            if not parts:
                return self.package
        if parts[0] in EXTERNAL or any(p.startswith("_") and p != "__init__" for p in parts):
            return None
        if not self.top:  # no package found: trust the target
            return ".".join([self.package, *parts])
        if parts[0] in self.top:
            return ".".join([self.package, *parts])
        for sub, names in self.sub.items():
            if parts[0] in names:
                return ".".join([self.package, sub, *parts])
        return None


def _defs(mod: Path) -> set[str]:
    tree = ast.parse(mod.read_text(encoding="utf-8"))
    return {
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.ClassDef) and not n.name.startswith("_")
    }


# ---------------------------------------------------------------- text rewriting


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _convert_math_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _MATH_DIRECTIVE_RE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, rest = m.group("indent"), m.group("rest").strip()
        level = len(indent)
        body: list[str] = [rest] if rest else []
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or _indent_of(lines[j]) > level):
            body.append(lines[j])
            j += 1
        # Blank lines at the end belong to the text after the block.
        trailing = 0
        while body and not body[-1].strip():
            body.pop()
            trailing += 1
        # Drop directive options (:label:, :nowrap:) and leading blank lines.
        while body and (not body[0].strip() or re.match(r"^\s*:\w+:", body[0])):
            body.pop(0)
        first = body.pop(0) if rest and body and body[0] == rest else None
        inner = [b for b in body if b.strip()]
        base = min((_indent_of(b) for b in inner), default=0)
        groups: list[list[str]] = [[first]] if first else [[]]
        for b in body:
            if b.strip():
                groups[-1].append(b[base:])
            elif groups[-1]:
                groups.append([])
        groups = [g for g in groups if g]
        for k, g in enumerate(groups):
            if k:
                out.append("")
            out.append(f"{indent}$$")
            out.extend(f"{indent}{x.rstrip()}" for x in g)
            out.append(f"{indent}$$")
        out.extend([""] * trailing)
        i = j
    return out


def _convert_literal_blocks(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _LITERAL_PARA_RE.match(line)
        if not m or m.group("text").lstrip().startswith(".."):
            out.append(line)
            i += 1
            continue
        level = _indent_of(line)
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        k = j
        while k < len(lines) and (not lines[k].strip() or _indent_of(lines[k]) > level):
            k += 1
        block = lines[j:k]
        while block and not block[-1].strip():
            block.pop()
        if not block or j == i + 1:  # not a literal block: leave the line alone
            out.append(line)
            i += 1
            continue
        text = m.group("text")
        # "text::" -> "text:"; a lone "::" paragraph disappears.
        out.append(f"{m.group('indent')}{text}:" if text.strip() != "" else "")
        out.append("")
        base = min(_indent_of(b) for b in block if b.strip())
        ind = m.group("indent")
        out.append(f"{ind}```python")
        out.extend(f"{ind}{b[base:]}" if b.strip() else "" for b in block)
        out.append(f"{ind}```")
        n_trailing = (k - j) - len(block)
        out.extend([""] * n_trailing)
        i = k
    return out


def convert_text(text: str, resolver: Resolver | None = None) -> str:
    """Convert one docstring's text (as written between its quotes) to the house Markdown."""
    resolver = resolver or Resolver(None)
    lines = text.split("\n")
    lines = _convert_math_blocks(lines)
    lines = _convert_literal_blocks(lines)
    text = "\n".join(lines)

    def math(m: re.Match) -> str:
        return "$" + m.group("body").strip() + "$"

    def role(m: re.Match) -> str:
        body = m.group("body")
        title = None
        t = re.match(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", body, re.DOTALL)
        if t:
            title, body = t.group("title"), t.group("target")
        name = resolver.resolve(body)
        shown = body.strip().lstrip("~")
        if name is None:
            return f"`{title or shown}`"
        if title:
            return f"[{title}][{name}]"
        return f"[`{name}`][]"

    text = _MATH_RE.sub(math, text)
    text = _ROLE_RE.sub(role, text)
    text = _LITERAL_RE.sub(lambda m: "`" + m.group("body") + "`", text)
    return text


# ---------------------------------------------------------------- finding docstrings


def _docstring_nodes(tree: ast.Module) -> list[ast.Constant]:
    found: list[ast.Constant] = []

    def first(body):
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if isinstance(body[0].value.value, str):
                found.append(body[0].value)

    def attributes(body):
        for prev, node in zip(body, body[1:]):
            if (
                isinstance(prev, ast.Assign | ast.AnnAssign)
                and isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                found.append(node.value)

    first(tree.body)
    attributes(tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first(node.body)
            if isinstance(node, ast.ClassDef):
                attributes(node.body)
    return found


_LITERAL_SRC_RE = re.compile(
    r'^(?P<prefix>[rRuU]?)(?P<q>"""|\'\'\'|"|\')(?P<body>.*)(?P=q)$', re.DOTALL
)


def convert_source(src: str, resolver: Resolver | None = None) -> str:
    """Return `src` with every docstring converted; all other text byte for byte."""
    tree = ast.parse(src)
    lines = src.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(lineno: int, col: int) -> int:  # ast columns count UTF-8 bytes
        line = lines[lineno - 1]
        return starts[lineno - 1] + len(line.encode("utf-8")[:col].decode("utf-8"))

    edits = []
    for node in _docstring_nodes(tree):
        a = offset(node.lineno, node.col_offset)
        b = offset(node.end_lineno, node.end_col_offset)
        m = _LITERAL_SRC_RE.match(src[a:b])
        if not m:  # implicit concatenation, f-string or bytes: leave it
            continue
        body = m.group("body")
        new = convert_text(body, resolver)
        if new != body:
            start = a + len(m.group("prefix")) + len(m.group("q"))
            edits.append((start, start + len(body), new))
    for start, end, new in sorted(edits, reverse=True):
        src = src[:start] + new + src[end:]
    return src


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="Python files or folders (searched for *.py)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if any file would change"
    )
    mode.add_argument("--diff", action="store_true", help="change nothing; print a unified diff")
    args = ap.parse_args(argv)
    changed = []
    for path in _files(args.paths):
        src = path.read_text(encoding="utf-8")
        new = convert_source(src, Resolver(_package_root(path.resolve())))
        if new == src:
            continue
        ast.parse(new)  # never write a file that no longer parses
        changed.append(path)
        if args.diff:
            sys.stdout.writelines(
                difflib.unified_diff(
                    src.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    str(path),
                    str(path),
                )
            )
        elif not args.check:
            path.write_text(new, encoding="utf-8")
    verb = "would change" if (args.check or args.diff) else "changed"
    for path in changed:
        print(f"{verb}: {path}", file=sys.stderr)
    print(f"{len(changed)} file(s) {verb}.", file=sys.stderr)
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
