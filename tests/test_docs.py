"""The documentation: every ``python`` code block of ``docs/*.md`` runs, and the docs build.

Each page's ```` ```python ```` blocks run in order, in one fresh namespace per page, in a
temporary working directory.  A block is skipped only when it is marked as not runnable: an
HTML comment ``<!-- no-test -->`` on the line before its fence, or a word after the language
(```` ```python no-test ````, ```` ```python title ````).  Shell and other blocks are not run.

The Sphinx build (``sphinx-build -W``: any warning fails) runs when Sphinx and MyST are
installed (``pip install -e ".[docs]"``).
"""

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from elektronn import backend

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_NO_TEST = "<!-- no-test -->"

# Objects that a page's text introduces without code: the introspection page shows calls on
# "a net `cnn`" and "a batch `data`".  A small seeded 2-D net stands in for them.
_PRELUDES = {
    "introspection.md": """
import numpy as np
from elektronn.net.convnet import MixedConvNN
cnn = MixedConvNN((20, 20), input_depth=1, batch_size=2, seed=0)
cnn.addConvLayer(4, 5, pool_shape=2, activation_func="tanh")
cnn.addPerceptronLayer(3, activation_func="tanh")
cnn.compileOutputFunctions(target="nll", only_forward=True)
data = np.random.default_rng(0).normal(size=(2, 1, 20, 20)).astype(np.float32)
""",
}


def code_blocks(text):
    """All fenced blocks of a Markdown text: ``(line, language, words, skip, code)``.

    ``line`` is the 1-based line of the first code line, ``language`` the first word of the
    info string, ``words`` the rest of it, ``skip`` whether the line before the fence is the
    ``<!-- no-test -->`` marker.  A fence closes with the same character, at least as long.
    """
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m["fence"], m["info"].strip().split()
        language, words = (info[0], info[1:]) if info else ("", [])
        skip = i > 0 and lines[i - 1].strip() == _NO_TEST
        body, j = [], i + 1
        while j < len(lines):
            close = _FENCE.match(lines[j])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) \
                    and not close["info"].strip():
                break
            body.append(lines[j][len(m["indent"]):] if lines[j].startswith(m["indent"])
                        else lines[j])
            j += 1
        blocks.append((i + 2, language, words, skip, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def runnable_blocks(text):
    """The ``(line, code)`` of the ``python`` blocks that are not marked as not runnable."""
    return [(line, code) for line, language, words, skip, code in code_blocks(text)
            if language == "python" and not words and not skip]


def test_code_blocks_parser():
    text = "\n".join([
        "# Page", "```python", "a = 1", "```", "", "<!-- no-test -->", "```python",
        "import not_a_module", "```", "```python title", "raise SystemExit", "```",
        "```bash", "rm -rf /", "```", "````markdown", "```python", "nested = 1", "```", "````",
        "~~~python", "b = a + 1", "~~~",
    ])
    assert runnable_blocks(text) == [(3, "a = 1\n"), (22, "b = a + 1\n")]
    assert [b[1] for b in code_blocks(text)] == ["python", "python", "python", "bash",
                                                 "markdown", "python"]


def test_every_page_is_checked():
    names = {p.name for p in PAGES}
    assert {"index.md", "getting-started.md", "api.md", "mfp.md", "lazy-labels.md",
            "cnncalculator.md", "backends.md", "coming-from-elektronn1.md",
            "introspection.md"} <= names
    for page in ("getting-started.md", "mfp.md", "lazy-labels.md", "cnncalculator.md",
                 "backends.md", "coming-from-elektronn1.md"):
        assert runnable_blocks((DOCS / page).read_text()), f"{page} has no runnable example"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Run in ``tmp_path``; restore the backend mode, logging and matplotlib afterwards."""
    monkeypatch.chdir(tmp_path)
    # the pages describe the default mode; a page's own set_mode ends with the test
    monkeypatch.setattr(backend, "_mode_name", "numpy")
    root, lib = logging.getLogger(), logging.getLogger("elektronn")
    saved = (list(root.handlers), root.level, lib.level)
    yield tmp_path
    root.handlers[:], root.level, lib.level = saved[0], saved[1], saved[2]
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


# --- results promised in comments -------------------------------------------------------------
# ``print(x)  # (4, 10)`` promises what the print shows; so do comment-only lines right after a
# print.  The promise's literals (numbers, quoted strings, bracketed expressions) must appear in
# the printed text in that order; words between them are prose, and so is everything after
# ": " (an explanation).  "..." in a literal leaves it out.

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w])")


def _literals(promise):
    """The literal parts of a promised output, in order."""
    promise = promise.split(": ")[0]
    out, i = [], 0
    while i < len(promise):
        ch = promise[i]
        if ch in "([":
            depth, j = 0, i
            while j < len(promise):
                depth += (promise[j] in "([") - (promise[j] in ")]")
                j += 1
                if depth == 0:
                    break
            out.append(promise[i:j])
            i = j
        elif ch in "'\"":
            j = promise.find(ch, i + 1)
            j = len(promise) if j < 0 else j
            out.append(promise[i + 1:j])
            i = j + 1
        else:
            m = _NUMBER.match(promise, i)
            if m and m.start() == i:
                out.append(m.group())
                i = m.end()
            else:
                i += 1
    return [" ".join(t.split()) for t in out if "..." not in t]


def promises(code, first_line):
    """``{page line of a print: promised text}`` of one code block."""
    lines, found = code.splitlines(), {}
    for k, text in enumerate(lines):
        stmt, _, comment = text.partition("#")
        if "print(" not in stmt:
            continue
        following = []
        for nxt in lines[k + 1:]:
            if not nxt.lstrip().startswith("#"):
                break
            following.append(nxt.lstrip()[1:].strip())
        promise = comment.strip() if comment.strip() else " ".join(following)
        if promise:
            found[first_line + k] = promise
    return found


def check_promise(line, promise, printed):
    text = " ".join(printed.split())
    pos = 0
    for literal in _literals(promise):
        at = text.find(literal, pos)
        assert at >= 0, f"line {line}: promised {literal!r} ({promise!r}), printed {printed!r}"
        pos = at + len(literal)


def test_promise_checker():
    assert _literals("(8, 2), every row sums to 1") == ["(8, 2)", "1"]
    assert _literals("[[0, 0], [0, 1]] [2, 2]") == ["[[0, 0], [0, 1]]", "[2, 2]"]
    assert _literals("'numpy', unless ELEKTRONN_MODE says otherwise") == ["numpy"]
    assert _literals("[24 24] (1, 2): input 24 suits MFP") == ["[24 24]", "(1, 2)"]
    assert _literals("needs batch_size 1 (...), got batch_size=4") == ["1", "4"]
    check_promise(1, "19 9.5 4", "19 9.5 4\n")
    with pytest.raises(AssertionError, match="promised '4'"):
        check_promise(1, "19 9.5 4", "19 9.5 3\n")
    with pytest.raises(AssertionError):
        check_promise(1, "(2, 6) (2, 3)", "(2, 3) (2, 6)")  # order matters
    code = "x = 1\nprint(x)   # 1\nprint(x, x)\n# 1 1\nprint(2)\n"
    assert promises(code, 10) == {11: "1", 12: "1 1"}


@pytest.mark.parametrize("page", [p.name for p in PAGES if runnable_blocks(p.read_text())])
def test_page_code_runs(page, isolated):
    """Every block runs, and every print shows what its comment promises."""
    printed = {}

    def recording_print(*args, sep=" ", end="\n", **kwargs):
        frame = sys._getframe(1)
        if frame.f_code.co_filename == str(DOCS / page):
            printed[frame.f_lineno] = printed.get(frame.f_lineno, "") + sep.join(
                map(str, args)) + end
        print(*args, sep=sep, end=end, **kwargs)

    namespace = {"__name__": f"docs.{page}", "print": recording_print}
    if page in _PRELUDES:
        exec(compile(_PRELUDES[page], f"<prelude of {page}>", "exec"), namespace)
    promised = {}
    for line, code in runnable_blocks((DOCS / page).read_text()):
        # Pad with blank lines so that tracebacks show the line numbers of the page.
        exec(compile("\n" * (line - 1) + code, str(DOCS / page), "exec"), namespace)
        promised.update(promises(code, line))
    for line, promise in promised.items():
        assert line in printed, f"{page}:{line}: the print promising {promise!r} never ran"
        check_promise(f"{page}:{line}", promise, printed[line])


@pytest.mark.slow
def test_mfp_figure_script(tmp_path):
    """The figure script of mfp.md runs (small image) and finds MFP and plain equal."""
    sys.path.insert(0, str(DOCS))
    try:
        import make_mfp_figure
    finally:
        sys.path.remove(str(DOCS))
    report = make_mfp_figure.main(["--out", str(tmp_path / "mfp.png"), "--size", "100",
                                   "--repeats", "1"])
    assert (tmp_path / "mfp.png").stat().st_size > 10_000
    assert report["max_abs_difference"] < 1e-5
    assert report["without MFP"]["passes_per_tile"] == 16
    assert report["with MFP"]["passes_per_tile"] == 1


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:] or result.stdout[-5000:]
    for page in ("index", "getting-started", "api", "mfp", "lazy-labels", "cnncalculator",
                 "backends", "coming-from-elektronn1", "introspection"):
        assert (tmp_path / "html" / f"{page}.html").is_file()
    api = (tmp_path / "html" / "api.html").read_text()
    assert 'id="elektronn.net.convnet.MixedConvNN.trainingStep"' in api
    assert 'id="elektronn.net.netutils.CNNCalculator"' in api


def test_readme_code_runs(isolated):
    """The Python examples of the README run as written."""
    readme = DOCS.parent / "README.md"
    namespace = {"__name__": "README"}
    blocks = runnable_blocks(readme.read_text())
    assert blocks
    for line, code in blocks:
        exec(compile("\n" * (line - 1) + code, str(readme), "exec"), namespace)
