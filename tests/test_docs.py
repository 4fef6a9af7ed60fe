"""The code in the documentation runs, and what its comments say it gives is what it gives.

Files: README.md and every docs/*.md.

Blocks: every fenced block opened with ```python, indented ones inside list items included;
other fences (```text, a bare ```, shell commands, log excerpts) are prose. A python block that
is not meant to run (a signature listing, a call written with made-up names to show an order)
says so on the line before its fence, visibly in the Markdown source:

    <!-- not run: signature listing -->

Such a block is only compiled (its test passes when it is valid Python with a reason).

Namespaces: a file runs section by section, a section being a ``##`` heading and everything down
to the next ``##`` (its ``###`` subsections included). Each section starts from a fresh namespace
holding what the file's preamble defined (the blocks before its first ``##`` heading: the guide's
imports) and runs its blocks in order in that namespace, so a block may use what the earlier
blocks of its section defined and nothing that another section defined. A section that builds on
an earlier one says so, anywhere in the section:

    <!-- continues: Quick example -->

(the heading of the earlier section, without the ``##``); it then starts from a copy of that
section's namespace after its blocks ran. ``mode="cuda"`` runs in numba-cuda's simulator
(tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1 before numba starts).

Claims: the comments on a block's top-level statements that state a result are checked.

- Printed output: a statement that calls ``print``, directly followed by comment lines: those
  lines (without their ``# ``) are what it prints.
- A trailing comment ``stmt  # CLAIM, CLAIM: prose`` on the last line of an expression statement
  (about its value) or an assignment (about the names assigned; ``a, b = ...  # CLAIM, CLAIM``
  makes one claim per name). The comment is cut at the first ``: `` or ``; `` and split at its
  top-level commas; each part, from the left, is a claim until one is prose (anything else),
  which ends the claims. A claim is
    * a value, written with numbers, brackets, ``array(...)``, ``True``/``False`` and nothing
      else: compared with ``str`` of the value (``repr`` when the claim starts with ``array(``).
      The value of an expression statement that is a 0-d array must be claimed as ``array(x)``
      (that is what the interpreter shows; a plain number claims a scalar);
    * a shape: ``shape (8,)``, a tuple written with names (``(B, T, H)``, read in the block's
      namespace), or a tuple of ints claimed for an array;
    * a dtype name (``float64``, ``int64``);
    * ``== EXPR``: the value equals EXPR (to 1e-10, relative);
    * ``NumPy``, ``NumPy array(s)``: the value is a NumPy array.
- Comment lines directly after a statement that does not print:
    * ``# NAME == EXPR``: both sides equal (to 1e-10, relative), shapes included;
    * ``# NAME: CLAIM, NAME: CLAIM``: claims as above about names of the namespace;
    * ``# on stderr ...:`` then lines: the last lines the statement wrote on stderr (progress
      bars redrawn with ``\\r`` count by their final state), without comparing what is in
      square brackets (times and rates) or between two ``|`` (the bar, as wide as the terminal);
      not checked where tqdm, whose bar the guide shows, is not installed.

Numbers match to their printed precision: a float shown with 8 or more decimals, or cut short
with a trailing ``...``, matches within one unit of its last digit; one shown with fewer decimals
(NumPy prints 8 and drops trailing zeros) within 1e-8 (relative in exponent form); integers
exactly.
An ``...`` between the elements of a printed array stands for the elements left out.
Comments that are none of these are prose and are not checked.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import linecache
import logging
import pathlib
import re
import textwrap
import tokenize

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")
CONTINUES = re.compile(r"^\s*<!--\s*continues:\s*(?P<title>.*?)\s*-->\s*$")
HEADING = re.compile(r"^##\s+(?P<title>.+?)\s*#*\s*$")


@dataclasses.dataclass
class Block:
    path: pathlib.Path
    section: str | None      # the ## heading, None for the preamble
    line: int                # 1-based line of the block's first code line in the file
    lang: str
    code: str
    not_run: str | None      # the reason given by <!-- not run: ... -->


@dataclasses.dataclass
class Section:
    title: str | None
    line: int
    blocks: list = dataclasses.field(default_factory=list)
    continues: str | None = None


def parse_markdown(lines, path):
    """The sections of a Markdown file's lines, in order, with their fenced blocks."""
    sections = {None: Section(None, 1)}
    current = sections[None]
    i = 0
    while i < len(lines):
        line = lines[i]
        m = FENCE.match(line)
        if m:
            indent, fence, lang = m.group("indent"), m.group("fence"), m.group("info").lower()
            j = i + 1
            while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                          and lines[j].strip().strip(fence[0]) == ""):
                j += 1
            body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip()
                    for ln in lines[i + 1:j]]
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            mark = NOT_RUN.match(lines[k]) if k >= 0 else None
            current.blocks.append(Block(path, current.title, i + 2, lang,
                                        textwrap.dedent("\n".join(body)) + "\n",
                                        mark.group("reason") if mark else None))
            i = j + 1
            continue
        h = HEADING.match(line)
        if h:
            title = h.group("title")
            assert title not in sections, f"{path.name}:{i + 1}: two sections named {title!r}"
            current = sections[title] = Section(title, i + 1)
        c = CONTINUES.match(line)
        if c:
            current.continues = c.group("title")
        i += 1
    return sections


LINES = {path: path.read_text(encoding="utf-8").splitlines() for path in DOC_FILES}
DOCS = {path: parse_markdown(LINES[path], path) for path in DOC_FILES}


def _rel(path):
    return path.relative_to(ROOT).as_posix()


def _python_blocks(section):
    return [b for b in section.blocks if b.lang in ("python", "py", "python3")]


SECTION_CASES = [
    pytest.param(path, title, id=f"{_rel(path)}::{title or 'preamble'}")
    for path, sections in DOCS.items()
    for title, section in sections.items()
    if any(b.not_run is None for b in _python_blocks(section))
]

# ------------------------------------------------------------------------------------------------
# claims


class ClaimError(AssertionError):
    pass


NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
TOKEN = re.compile(rf"(?P<num>{NUMBER})(?P<cut>\.\.\.)?|(?P<ell>\.\.\.|…)|(?P<word>[A-Za-z_]\w*)"
                   r"|(?P<other>\S)")
VALUE_PART = re.compile(r"^(?:array\(|\[|\(|[-+]?\.?\d|True\b|False\b)")
VALUE_WORDS = {"array", "dtype", "True", "False", "nan", "inf", "float32", "float64", "int64",
               "int32", "bool"}
DTYPE = re.compile(r"^(?:float(?:16|32|64)|u?int(?:8|16|32|64)|complex(?:64|128)|bool)$")
SHAPE_PREFIX = re.compile(r"^shape\s*(?P<shape>\(.*\))$")
KIND_NUMPY = re.compile(r"^(?:a )?NumPy(?: arrays?)?$")


def _tokens(text):
    out = []
    for m in TOKEN.finditer(text):
        if m.group("num") is not None:
            out.append(("num", m.group("num"), bool(m.group("cut"))))
        elif m.group("ell"):
            out.append(("ell", "...", False))
        elif m.group("word"):
            out.append(("word", m.group("word"), False))
        else:
            out.append(("other", m.group("other"), False))
    return out


def _tolerance(text, cut):
    """How far a value may be from the number printed as `text` (cut: followed by '...')."""
    x = abs(float(text))
    if not re.search(r"[.eE]", text):                     # an integer
        return 0.0
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    if cut or decimals >= 8:                              # within one unit of the last digit
        return 10.0 ** (int(exponent or 0) - decimals) + 4e-16 * x
    # NumPy prints 8 decimals (8 significant digits in exponent form) and drops trailing zeros
    return (1e-8 * x if exponent else 1e-8) + 4e-16 * x


def _same_token(claimed, actual):
    kind, text, cut = claimed
    if kind == "num":
        if actual[0] != "num":
            return False
        a, c = float(actual[1]), float(text)
        if np.isnan(a) or np.isnan(c):
            return np.isnan(a) and np.isnan(c)
        return abs(a - c) <= _tolerance(text, cut)
    return kind == actual[0] and text == actual[1]


def match_printed(claimed_text, actual_text, what):
    """`claimed_text` shows `actual_text`: the same tokens, numbers to their printed precision,
    an elision '...' standing for any run of tokens."""
    claimed, actual = _tokens(claimed_text), _tokens(actual_text)
    pieces, piece = [], []
    for t in claimed:
        if t[0] == "ell":
            pieces.append(piece)
            piece = []
        else:
            piece.append(t)
    pieces.append(piece)
    if len(pieces) == 1:
        ok = len(actual) == len(claimed) and all(map(_same_token, claimed, actual))
    else:
        head, *middle, tail = pieces
        ok = len(actual) >= len(head) + len(tail) and all(map(_same_token, head, actual))
        pos, stop = len(head), len(actual) - len(tail)
        for piece in middle:                              # the first place it fits after pos
            for start in range(pos, stop - len(piece) + 1):
                if all(map(_same_token, piece, actual[start:])):
                    pos = start + len(piece)
                    break
            else:
                ok = False
        ok = ok and all(map(_same_token, tail, actual[stop:]))
    if not ok:
        raise ClaimError(f"{what}: the documentation says\n{claimed_text}\nbut it is\n{actual_text}")


def _split_top(text, sep=","):
    """`text` split at the `sep` characters outside brackets, parentheses and quotes."""
    parts, depth, start, quote = [], 0, 0, None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _cut_prose(text):
    """The comment up to its first top-level ': ' or '; ' (what follows is prose)."""
    depth = 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch in ":;" and depth == 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[:i].strip()
    return text.strip()


def _is_value(part):
    if not VALUE_PART.match(part):
        return False
    rest = re.sub(rf"{NUMBER}|\.\.\.|…|[\s,\[\]()=+\-]", " ", part)
    return all(w in VALUE_WORDS for w in rest.split())


def _is_shape(part):
    """A tuple written with names (``(B, T, H)``, ``(len(y), len(v))``): a shape."""
    try:
        tree = ast.parse(part, mode="eval").body
    except SyntaxError:
        return False
    return (part.startswith("(") and isinstance(tree, ast.Tuple) and bool(tree.elts)
            and any(not isinstance(e, ast.Constant) for e in tree.elts)
            and all(isinstance(e, (ast.Name, ast.Call, ast.Attribute, ast.BinOp, ast.Subscript))
                    or (isinstance(e, ast.Constant) and type(e.value) is int) for e in tree.elts))


def claim_parts(comment):
    """The claims at the start of a trailing comment, as (kind, text); [] for prose."""
    parts = []
    for part in _split_top(_cut_prose(comment)):
        if part.startswith("=="):
            parts.append(("equals", part[2:].strip()))
        elif DTYPE.match(part):
            parts.append(("dtype", part))
        elif KIND_NUMPY.match(part):
            parts.append(("numpy", part))
        elif SHAPE_PREFIX.match(part):
            parts.append(("shape", SHAPE_PREFIX.match(part).group("shape")))
        elif _is_shape(part):
            parts.append(("shape", part))
        elif _is_value(part):
            parts.append(("value", part))
        else:
            break
    return parts


def _shape_expr(text, namespace):
    try:
        shape = eval(text, dict(namespace))
    except Exception:
        return None
    if isinstance(shape, tuple) and all(isinstance(s, (int, np.integer)) for s in shape):
        return tuple(int(s) for s in shape)
    return None


def check_equal(left, right, what):
    a, b = np.asarray(left), np.asarray(right)
    if a.shape != b.shape:
        raise ClaimError(f"{what}: shapes {a.shape} and {b.shape}")
    if a.dtype.kind in "biu" and b.dtype.kind in "biu":
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=what)


def check_claim(kind, text, value, namespace, what, displayed):
    """One claim about `value`; `displayed`: the value of an expression statement."""
    what = f"{what}: # {text}"
    if kind == "equals":
        check_equal(value, eval(text, dict(namespace)), what)
    elif kind == "dtype":
        dtype = np.asarray(value).dtype
        if dtype != np.dtype(text):
            raise ClaimError(f"{what}: the dtype is {dtype}")
    elif kind == "numpy":
        if not isinstance(value, np.ndarray):
            raise ClaimError(f"{what}: it is a {type(value).__module__}.{type(value).__name__}")
    elif kind == "shape":
        shape = _shape_expr(text, namespace)
        if shape is None:
            raise ClaimError(f"{what}: not a shape")
        if tuple(np.shape(value)) != shape:
            raise ClaimError(f"{what}: the shape is {np.shape(value)}")
    elif kind == "value":
        is_array = isinstance(value, np.ndarray)
        shape = _shape_expr(text, namespace) if text.startswith("(") else None
        if is_array and value.ndim >= 1 and shape is not None and len(shape) == value.ndim:
            check_claim("shape", text, value, namespace, what, displayed)
        elif text.startswith("array("):
            if not is_array:
                raise ClaimError(f"{what}: it is not an array but {value!r}")
            match_printed(text, repr(value), what)
        elif displayed and is_array and value.ndim == 0:
            raise ClaimError(f"{what}: the value is {value!r}, a 0-d array: claim it as "
                             f"{value!r} (or show a number, e.g. with .item())")
        else:
            match_printed(text, str(value), what)
    else:                                                 # pragma: no cover
        raise AssertionError(kind)


# ------------------------------------------------------------------------------------------------
# running blocks


def _comments(code):
    """{line: (text, own_line)} of the comments of `code` (lines 1-based within the block)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT:
            own = tok.line[:tok.start[1]].strip() == ""
            out[tok.start[0]] = (tok.string[1:].strip(), own)
    return out


def _calls_print(stmt):
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
               for n in ast.walk(stmt))


def _targets(stmt):
    """The expressions assigned by `stmt`, or None when it assigns none (one per tuple element)."""
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
        target = stmt.targets[-1] if isinstance(stmt, ast.Assign) else stmt.target
        if isinstance(target, (ast.Tuple, ast.List)):
            return list(target.elts)
        return [target]
    return None


def _stderr_lines(text):
    lines = []
    for line in text.split("\n"):
        redraws = [r for r in line.split("\r") if r.strip()]
        if redraws:
            lines.append(redraws[-1].rstrip())
    return lines


def _without_brackets(line):
    """A progress line without what changes from run to run: times and rates in brackets, and
    the bar between two '|' (its width follows the terminal's)."""
    line = re.sub(r"\|[^|]*\|", "||", re.sub(r"\[[^\]]*\]", "[]", line))
    return re.sub(r"\s+", " ", line).strip()


class _Capture(io.StringIO):
    """A captured stream that says it is UTF-8 (tqdm draws its ASCII bar on streams without an
    encoding)."""

    encoding = "utf-8"


def run_block(block, namespace):
    code = block.code
    where = f"{_rel(block.path)}:{block.line}"
    # tracebacks show the block, its lines counted from the block's first line
    filename = f"{where} (the block's line numbers)"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    tree = ast.parse(code, filename=filename)
    comments = _comments(code)
    n_lines = code.count("\n") + 1
    stmts = tree.body
    for i, stmt in enumerate(stmts):
        end = stmt.end_lineno
        following = []
        line = end + 1
        next_start = stmts[i + 1].lineno if i + 1 < len(stmts) else n_lines + 1
        while line < next_start and line in comments and comments[line][1]:
            following.append(comments[line][0])
            line += 1
        out, err = _Capture(), _Capture()
        value = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if isinstance(stmt, ast.Expr):
                value = eval(compile(ast.Expression(stmt.value), filename, "eval"), namespace)
            else:
                exec(compile(ast.Module([stmt], []), filename, "exec"), namespace)
        what = f"{_rel(block.path)}:{block.line + end - 1}"
        trailing = comments.get(end)
        if trailing and not trailing[1]:
            parts = claim_parts(trailing[0])
            targets = _targets(stmt)
            if parts and isinstance(stmt, ast.Expr):
                for kind, text in parts:
                    check_claim(kind, text, value, namespace, what, displayed=True)
            elif parts and targets is not None:
                values = [eval(ast.unparse(t), namespace) for t in targets]
                if len(values) > 1:
                    if len(parts) > len(values):
                        raise ClaimError(f"{what}: {len(parts)} claims for {len(values)} names")
                    pairs = zip(parts, values)
                else:
                    pairs = [(p, values[0]) for p in parts]
                for (kind, text), v in pairs:
                    check_claim(kind, text, v, namespace, what, displayed=False)
        if following and _calls_print(stmt):
            match_printed("\n".join(following), out.getvalue(), f"{what}: printed output")
            continue
        j = 0
        while j < len(following):
            text = following[j]
            eq = re.match(r"^(?P<left>[A-Za-z_][\w.]*(?:\[[^\]]*\])?)\s*==\s*(?P<right>.+)$", text)
            named = re.match(r"^[A-Za-z_]\w*: ", text)
            if re.match(r"^on stderr\b.*:$", text):
                expected = following[j + 1:]
                j = len(following)
                try:
                    import tqdm  # noqa: F401  (the documented lines are tqdm's bar)
                except ImportError:
                    continue
                actual = _stderr_lines(err.getvalue())
                got = [_without_brackets(a) for a in actual[-len(expected):]] if expected else []
                want = [_without_brackets(e) for e in expected]
                if got != want:
                    raise ClaimError(f"{what}: the documentation says on stderr\n"
                                     + "\n".join(expected) + "\nbut it wrote\n" + err.getvalue())
                continue
            if eq:
                check_equal(eval(eq.group("left"), dict(namespace)),
                            eval(eq.group("right"), dict(namespace)), f"{what}: # {text}")
            elif named:
                for item in _split_top(text):
                    name, _, claim = item.partition(": ")
                    if name not in namespace:
                        break
                    parts = claim_parts(claim)
                    if not parts:
                        break
                    for kind, ctext in parts:
                        check_claim(kind, ctext, namespace[name], namespace, what, displayed=False)
            j += 1



_NAMESPACES = {}


def section_namespace(path, title):
    """The namespace of section `title` of `path` after its blocks ran (run once per session)."""
    key = (path, title)
    if key in _NAMESPACES:
        return _NAMESPACES[key]
    section = DOCS[path][title]
    if title is None:
        namespace = {"__name__": "docs_" + re.sub(r"\W", "_", path.stem)}
    elif section.continues is not None:
        assert section.continues in DOCS[path], (
            f"{_rel(path)}:{section.line}: continues an unknown section {section.continues!r}")
        namespace = dict(section_namespace(path, section.continues))
    else:
        namespace = dict(section_namespace(path, None))
    logger = logging.getLogger("numbascan")
    level = logger.level
    try:
        for block in _python_blocks(section):
            if block.not_run is None:
                run_block(block, namespace)
    finally:
        logger.setLevel(level)                            # a block may configure the logger
    _NAMESPACES[key] = namespace
    return namespace


# ------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("path, title", SECTION_CASES)
def test_section_runs(path, title):
    section_namespace(path, title)


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_markers(path):
    """Markers are well formed: a not-run reason, a python block after it, a section to continue."""
    sections = DOCS[path]
    titles = list(sections)
    lines = LINES[path]
    marked = {b.line for s in sections.values() for b in s.blocks if b.not_run is not None}
    for i, line in enumerate(lines):
        if NOT_RUN.match(line):
            assert NOT_RUN.match(line).group("reason"), f"{_rel(path)}:{i + 1}: no reason given"
            k = i + 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            assert k + 2 in marked, f"{_rel(path)}:{i + 1}: not followed by a fenced block"
            m = FENCE.match(lines[k])
            assert m and m.group("info").lower() == "python", (
                f"{_rel(path)}:{i + 1}: a not-run marker belongs before a ```python block")
        elif "<!--" in line and re.search(r"not[ -]run|continues", line):
            assert CONTINUES.match(line), f"{_rel(path)}:{i + 1}: malformed marker {line!r}"
    for title, section in sections.items():
        if section.continues is not None:
            assert section.continues in sections, (
                f"{_rel(path)}:{section.line}: continues an unknown section {section.continues!r}")
            assert titles.index(section.continues) < titles.index(title), (
                f"{_rel(path)}:{section.line}: continues a later section")


NOT_RUN_CASES = [
    pytest.param(block, id=f"{_rel(path)}:{block.line}")
    for path, sections in DOCS.items()
    for section in sections.values()
    for block in _python_blocks(section)
    if block.not_run is not None
]


@pytest.mark.parametrize("block", NOT_RUN_CASES)
def test_not_run_block(block):
    """A block marked not run (a signature listing, an order shown with made-up names) is still
    valid Python and says why it is not run."""
    assert block.not_run.strip(), f"{_rel(block.path)}:{block.line}: no reason given"
    compile(block.code, f"{_rel(block.path)}:{block.line}", "exec")


def test_claims_are_read():
    """The claim checker accepts what it should and rejects what it should."""
    assert claim_parts("array(0): nothing has been applied yet") == [("value", "array(0)")]
    assert claim_parts("8 sequences of 20 steps") == []
    assert claim_parts("reverse mode, through a recorded tape") == []
    assert claim_parts("(4, 8, 8), NumPy") == [("value", "(4, 8, 8)"), ("numpy", "NumPy")]
    assert claim_parts("shape (8,)") == [("shape", "(8,)")]
    assert claim_parts("(B, T, H)") == [("shape", "(B, T, H)")]
    assert claim_parts("(len(y), len(v))") == [("shape", "(len(y), len(v))")]
    assert claim_parts("float64") == [("dtype", "float64")]
    assert claim_parts("1.4142135623730951, 6") == [("value", "1.4142135623730951"),
                                                    ("value", "6")]
    match_printed("[ 0.  1.  4.  9. ... 81.]", str(np.arange(10.0) ** 2), "elided")
    match_printed("0.35355339...", str(1 / (2 * np.sqrt(2))), "cut")
    match_printed("[1.e-12 2.e-12]", str(np.array([1e-12, 2e-12])), "exponent")
    match_printed("[[-0.99505475 -0.99505475]]", str(np.array([[-0.995054753]] * 2).T), "print")
    for claimed, actual in [("0.3535", "0.3537"), ("[1. 2.]", "[1. 2. 3.]"), ("6", "7"),
                            ("1.e-12", "2.e-12"), ("[1.]", "[1.00000002]"),
                            ("[ 0. ... 80.]", "[ 0.  1. 81.]")]:
        with pytest.raises(ClaimError):
            match_printed(claimed, actual, "wrong")
    with pytest.raises(ClaimError):
        check_claim("value", "0", np.array(0), {}, "0-d", displayed=True)
    check_claim("value", "array(0)", np.array(0), {}, "0-d", displayed=True)
