"""The example scripts (examples/*.py) and the code in docs/workflows.md run as written.

Each runs in this process inside ``sklearn.config_context()``, which restores
scikit-learn's global configuration afterwards: the scripts switch metadata routing on
with ``sklearn.set_config``, as a user would, and that must not leak into other tests.
The scripts check their own results with ``assert``; here we check they ran and printed
what they promise.
"""

import contextlib
import importlib
import io
import os
import re
import runpy
import sys
from pathlib import Path

import pytest
import sklearn

ROOT = Path(__file__).parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
WORKFLOWS = ROOT / "docs" / "workflows.md"

# what each script must print (a fragment), so a script that silently does nothing fails
EXPECTED_OUTPUT = {
    "pipeline_grid_search.py": "best GroupKFold R^2",
    "cross_validation.py": "KFold: population R^2",
    "without_routing.py": "bare estimator search fails, as expected",
    "pandas_workflow.py": "ColumnTransformer -> ['num__Days']",
    "persistence.py": "identical predictions",
    "datasets.py": "REML criterion 1743.628",
    "gasoline.py": "wrote 4 figures",
    "inference.py": "inference example done",
}
# packages a script needs beyond sklmm's own (the docs extra); the script is skipped without
# them, except under SKLMM_DOCS_CI=1 (.ci/run, after installing the docs extra), where it fails
EXTRA_PACKAGES = {"gasoline.py": ["matplotlib"]}
# scripts that write files take the output folder as their argument: a temporary one here
WRITES_FILES = {"gasoline.py"}


def _run(function):
    out = io.StringIO()
    with sklearn.config_context(), contextlib.redirect_stdout(out):
        function()
    return out.getvalue()


def test_every_example_is_checked():
    assert sorted(path.name for path in EXAMPLES) == sorted(EXPECTED_OUTPUT)


def _require(packages):
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            if os.environ.get("SKLMM_DOCS_CI") == "1":
                pytest.fail(f"{name} is missing: install the docs extra (python -m pip install -e '.[docs]')")
            pytest.skip(f"needs {name} (the docs extra)")


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(script, tmp_path, monkeypatch):
    _require(EXTRA_PACKAGES.get(script.name, []))
    monkeypatch.setattr(sys, "argv", [str(script), *([str(tmp_path)] if script.name in WRITES_FILES else [])])
    routing_before = sklearn.get_config()["enable_metadata_routing"]
    output = _run(lambda: runpy.run_path(str(script), run_name="__main__"))
    assert EXPECTED_OUTPUT[script.name] in output
    assert sklearn.get_config()["enable_metadata_routing"] == routing_before  # nothing leaked
    if script.name in WRITES_FILES:
        # the figures the docs show are the ones the script makes
        made = sorted(path.name for path in tmp_path.iterdir())
        assert made and all((ROOT / "docs" / "_static" / name).exists() for name in made), made


def test_example_docstrings_say_how_to_run_them():
    for script in EXAMPLES:
        text = script.read_text()
        assert text.startswith('"""'), script.name
        assert f"Run: python examples/{script.name}" in text, script.name


def test_workflows_page_code_runs_in_order():
    from test_docs_code import _normalise, code_blocks

    blocks = code_blocks(WORKFLOWS.read_text())
    assert len(blocks) >= 8
    namespace: dict = {}

    def run_all():
        for code, expected, line in blocks:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, f"docs/workflows.md python block at line {line}", "exec"), namespace)
            if expected is not None:  # an ```output block shows what the code prints
                assert _normalise(out.getvalue()) == _normalise(expected), f"docs/workflows.md line {line}"

    with sklearn.config_context():
        run_all()
    # the recipe's search ran with groups routed: the refit model knows every subject
    assert len(namespace["search"].best_estimator_[-1].random_effects_["Subject"]) == 18


def test_workflows_page_lists_every_example():
    text = WORKFLOWS.read_text()
    for script in EXAMPLES:
        assert f"`{script.name}`" in text, script.name
