"""Every code example in the documentation runs, and shows what it prints.

* Each ``docs/*.md`` page's ```` ```python ```` blocks run in order, in one
  namespace per page, in a temporary working folder, inside
  ``sklearn.config_context()`` (so a page that turns metadata routing on does
  not leak it into other tests).  ``docs/workflows.md`` is run by
  ``tests/test_examples.py`` and left out here.
* A ```` ```output ```` block right after a ```` ```python ```` block is what that
  block prints: it must match exactly (trailing spaces aside).
* A page whose code imports a package that is not installed (matplotlib,
  statsmodels: the ``docs`` extra) is skipped, unless ``SKLMM_DOCS_CI=1``
  (set by ``.ci/run`` after installing the ``docs`` extra), where it fails.
* The getting-started page installs with the README's command.
* Every public name has a docstring with an Examples section (doctests run
  with ``--doctest-modules``, see ``pyproject.toml``).

To refresh the ```` ```output ```` blocks of a page after a deliberate change::

    python tests/test_docs_code.py docs/getting-started.md
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import os
import re
import sys
import warnings
from pathlib import Path

import pytest
import sklearn

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
#: Pages whose code another test runs.
RUN_ELSEWHERE = {"workflows.md"}  # tests/test_examples.py
PAGES = sorted(p for p in DOCS.glob("*.md") if p.name not in RUN_ELSEWHERE)
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
OPTIONAL_PACKAGES = ("matplotlib", "statsmodels", "dask", "distributed")  # dask: the test extra
STRICT = os.environ.get("SKLMM_DOCS_CI") == "1"


def code_blocks(text: str) -> list[tuple[str, str | None, int]]:
    """(python code, expected output or None, line number) for each python block."""
    fences = [(m.group("info").strip(), m.group("body"), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]
    blocks = []
    for i, (info, body, line) in enumerate(fences):
        if info == "python":
            after = fences[i + 1] if i + 1 < len(fences) else None
            expected = after[1] if after is not None and after[0] == "output" and _adjacent(text, line, body, after[2]) else None
            blocks.append((body, expected, line))
    return blocks


def _adjacent(text: str, line: int, body: str, next_line: int) -> bool:
    """The output fence follows the python fence with only blank lines between."""
    end = line + body.count("\n") + 1  # the closing fence's line
    between = text.splitlines()[end : next_line - 1]
    return all(not s.strip() for s in between)


def _normalise(output: str) -> str:
    return "\n".join(line.rstrip() for line in output.strip("\n").splitlines())


def _missing_packages(code: str) -> list[str]:
    missing = []
    for name in OPTIONAL_PACKAGES:
        if re.search(rf"^\s*(import|from)\s+{name}\b", code, re.M):
            try:
                importlib.import_module(name)
            except ImportError:
                missing.append(name)
    return missing


def run_page(page: Path, tmp_path: Path) -> list[tuple[int, str, str | None]]:
    """Run a page's python blocks in order; (line, printed, expected) per block."""
    blocks = code_blocks(page.read_text())
    namespace: dict = {"__name__": "__main__"}
    results = []
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with sklearn.config_context(), warnings.catch_warnings():
            for code, expected, line in blocks:
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    exec(compile(code, f"{page.relative_to(ROOT)}, python block at line {line}", "exec"), namespace)
                results.append((line, out.getvalue(), expected))
    finally:
        os.chdir(cwd)
    return results


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_runs_and_prints_what_it_shows(page, tmp_path):
    text = page.read_text()
    missing = _missing_packages("\n".join(code for code, _, _ in code_blocks(text)))
    if missing:
        if STRICT:
            pytest.fail(f"{page.name} needs {missing}: install the docs extra (python -m pip install -e '.[docs]')")
        pytest.skip(f"{page.name} needs {missing} (the docs extra)")
    try:
        results = run_page(page, tmp_path)
    except ModuleNotFoundError as error:  # e.g. a plotting function that imports matplotlib itself
        if STRICT or (error.name or "").split(".")[0] not in OPTIONAL_PACKAGES:
            raise
        pytest.skip(f"{page.name} needs {error.name} (the docs extra)")
    for line, printed, expected in results:
        if expected is not None:
            assert _normalise(printed) == _normalise(expected), f"{page.name}: the block at line {line} printed\n{printed}"


def test_output_blocks_follow_python_blocks():
    """A stray ```output block would never be checked."""
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        fences = list(FENCE.finditer(text))
        checked = sum(expected is not None for _, expected, _ in code_blocks(text))
        assert checked == sum(m.group("info").strip() == "output" for m in fences), page.name


def test_getting_started_installs_with_the_readme_command():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("##", 1)[0]
    install = re.search(r"```bash\n(.*?)```", setup, re.S).group(1).strip().splitlines()[0]
    page = (DOCS / "getting-started.md").read_text()
    shell = "\n".join(body for info, body in re.findall(r"^```(\w*)\n(.*?)^```", page, re.S | re.M) if info in ("bash", "console", "shell"))
    assert install in shell.splitlines()


def test_readme_gives_the_docs_build_command():
    readme = (ROOT / "README.md").read_text()
    assert "sphinx-build -W --keep-going -b html docs docs/_build/html" in readme
    assert "sphinx-build -W --keep-going -b html docs docs/_build/html" in (ROOT / ".ci" / "run").read_text()


def _docs_extension():
    """The docs' Sphinx extension module (``docs/_ext/sklmm_docs.py``); skipped without Sphinx, unless STRICT."""
    try:
        import docutils  # noqa: F401  (the extension needs Sphinx and its docutils)
        import sphinx  # noqa: F401
    except ImportError:
        if STRICT:
            raise
        pytest.skip("needs Sphinx (the docs extra)")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import sklmm_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return sklmm_docs


def test_benchmark_page_renders_the_result_files(tmp_path):
    """The benchmarks page's tables come from the CSV files, and say so when there are none."""
    sklmm_docs = _docs_extension()
    assert "No benchmark results" in "\n".join(sklmm_docs.benchmark_lines(tmp_path, tmp_path / "none.png"))
    (tmp_path / "latest.csv").write_text(
        "library,problem,n,status,seconds,objective_minus_lme4,sklmm_speedup,speedup_is_lower_bound,machine\n"
        "sklmm,sleepstudy,180,ok,0.01,0.0,,False,Test CPU\n"
        "lme4,sleepstudy,180,ok,0.05,0.0,5.0,False,Test CPU\n"
        "statsmodels,sleepstudy,180,timeout,,,60000.0,True,Test CPU\n"
    )
    text = "\n".join(sklmm_docs.benchmark_lines(tmp_path, tmp_path / "none.png"))
    assert "Machine: Test CPU" in text and "5.0x" in text and ">60000.0x" in text and "timeout" in text


def test_large_crossed_table_renders_the_full_scale_runs(tmp_path):
    """The large crossed table: full-scale JSON records only (not ``@scale``), resumed time summed, lme4's check, peers."""
    sklmm_docs = _docs_extension()
    published = tmp_path / "published.py"
    published.write_text(
        "PUBLISHED = {'big': [dict(library='Peer.jl (published)', rows=5000, levels={'u': 50, 'i': 40}, evaluations=20,"
        " fit_seconds=7000.0, seconds_per_evaluation=350.0, model_gib=24.3, machine='48 cores', source='their book')]}\n"
    )
    assert "No full-scale" in "\n".join(sklmm_docs.large_crossed_lines(tmp_path, published))

    def record(name, n, check=None):
        fit = dict(seconds=1000.0, replayed_seconds=500.0, n_iter=3, peak_rss_mb=2048.0, objective=12345.678901, theta=[0.5, 0.4])
        out = dict(problem=name, spec=dict(n=n), levels={"u": 50, "i": 40}, sklmm=fit)
        if check is not None:
            out["lme4_devfun"] = check
        return out

    (tmp_path / "crossed_large_big_latest.json").write_text(json.dumps(record("big", 5000)))
    (tmp_path / "crossed_large_small_latest.json").write_text(
        json.dumps(record("small", 600, dict(relative_difference=2.0e-15, neighbours_higher=True))))
    (tmp_path / "crossed_large_small@0.1_latest.json").write_text(json.dumps(record("shrunk", 60)))
    text = "\n".join(sklmm_docs.large_crossed_lines(tmp_path, published))
    assert "shrunk" not in text and text.index("- small") < text.index("- big")
    assert "- 1,500" in text and "- 500" in text and "2.0 (peak resident)" in text and "12,345.6789" in text
    assert "+2.0e-15 relative; every neighbour higher" in text and "- not run (--no-check)" in text
    assert "Peer.jl (published), 48 cores" in text and "- 7,000" in text and "their book" in text


# -- every public name has a runnable example ----------------------------------------

PUBLIC_MODULES = ["sklmm", "sklmm.datasets"]
#: Public names whose docstrings still lack an Examples section (each listed, with the
#: text to add, in the documentation issue's report).  A name not in this set must have
#: one; delete names from the set as their docstrings gain examples.
MISSING_EXAMPLES = {
    # core
    "sklmm.MixedLinearRegressor.fit",
    "sklmm.MixedLinearRegressor.predict",
    "sklmm.MixedLinearRegressor.score",
    # inference (in progress when this test was written)
    "sklmm.AnovaTable",
    "sklmm.BootstrapResult",
    "sklmm.BootstrapResult.percentile_intervals",
    "sklmm.MixedLinearRegressor.confint",
    "sklmm.MixedLinearRegressor.predict_se",
    "sklmm.MixedLinearRegressor.random_effects_cov_",
    "sklmm.MixedLinearRegressor.simulate",
    "sklmm.MixedLinearRegressor.summary",
    "sklmm.ModelSummary",
}


def public_objects():
    """(qualified name, object) for each name in __all__ and each public method sklmm defines on them."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            yield f"{module_name}.{name}", obj
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                        continue
                    target = member.fget if isinstance(member, property) else member
                    if getattr(target, "__module__", "").startswith("sklmm"):
                        yield f"{module_name}.{name}.{attr}", target


def test_every_public_name_has_an_example():
    lacking = {name for name, obj in public_objects() if "Examples\n" not in (inspect.getdoc(obj) or "")}
    assert lacking <= MISSING_EXAMPLES, f"public names without an Examples section: {sorted(lacking - MISSING_EXAMPLES)}"


if __name__ == "__main__":
    # Rewrite the ```output blocks of the pages named on the command line with what their code prints now.
    import tempfile

    for name in sys.argv[1:]:
        page = Path(name).resolve()
        text = page.read_text()
        with tempfile.TemporaryDirectory() as folder:
            results = run_page(page, Path(folder))
        blocks = code_blocks(text)
        pieces, last = [], 0
        lines = text.splitlines(keepends=True)
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line))
        for (code, expected, line), (_, printed, _) in zip(blocks, results):
            if expected is None:
                continue
            start = offsets[line - 1] + len("```python\n") + len(code) + len("```")
            match = re.compile(r"\s*```output\n.*?^```", re.S | re.M).match(text, start)
            pieces.append(text[last : match.start()])
            pieces.append("\n\n```output\n" + _normalise(printed) + "\n```")
            last = match.end()
        pieces.append(text[last:])
        page.write_text("".join(pieces))
        print(f"updated {page}")
