"""Sphinx helpers for sklmm's documentation.

``.. public-api:: MODULE``
    Documents every name in ``MODULE.__all__`` with autodoc (numpydoc renders
    the docstrings), so a name added to ``__all__`` is in the API reference
    without editing the page.  ``:kind:`` picks ``classes``, ``functions`` or
    ``warnings`` (warning and exception classes); the default is all of them.
    Classes get their own public methods and properties (``:members:``).

``.. benchmark-results::``
    The tables of ``benchmarks/results/latest.csv`` (every problem, every
    library) and ``benchmarks/results/scaling_latest.csv`` (fit time against
    n), with the machine they ran on and the figure
    ``docs/_static/benchmarks.png`` when it exists.  Without results it says
    how to make them.  The environment variable ``SKLMM_BENCHMARK_RESULTS``
    points it at another folder (the tests use it).

``.. large-crossed-results::``
    The full-scale runs of ``benchmarks/crossed_large.py`` (the files
    ``benchmarks/results/crossed_large_<problem>_latest.json`` without an
    ``@scale``): sklmm's fit time, evaluations, peak memory and criterion, and
    lme4's objective at sklmm's optimum and around it where it was run, with
    the peers' published figures for the same shapes
    (``benchmarks/published.py``) beside them.  ``SKLMM_BENCHMARK_RESULTS``
    applies here too.

``sklmm_optional_pages`` (a config value)
    Pages written by other issues (``inference``): while the file is missing,
    its line is dropped from every toctree, so the site builds with ``-W``
    whichever lands first.

Both directives are used inside ``{eval-rst}`` blocks of the Markdown pages,
so their output is parsed as reStructuredText.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import re
import runpy
from pathlib import Path

import pandas as pd
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
FIGURE = ROOT / "docs" / "_static" / "benchmarks.png"
PUBLISHED = ROOT / "benchmarks" / "published.py"
LIBRARIES = ["sklmm", "lme4", "statsmodels", "mixedlm"]


# -- the public API ---------------------------------------------------------------------


def public_names(module_name: str, kind: str = "all") -> list[tuple[str, str]]:
    """(autodoc directive, qualified name) for each name in the module's ``__all__``."""
    module = importlib.import_module(module_name)
    out = []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) and issubclass(obj, (Warning, Exception)):
            entry, group = "autoexception", "warnings"
        elif inspect.isclass(obj):
            entry, group = "autoclass", "classes"
        elif callable(obj):
            entry, group = "autofunction", "functions"
        else:
            entry, group = "autodata", "data"
        if kind in ("all", group):
            out.append((entry, f"{module_name}.{name}"))
    return out


class PublicAPI(SphinxDirective):
    required_arguments = 1
    option_spec = {"kind": directives.unchanged}

    def run(self):
        kind = self.options.get("kind", "all")
        lines = []
        for entry, qualified in public_names(self.arguments[0], kind):
            lines.append(f".. {entry}:: {qualified}")
            if entry == "autoclass":
                lines.append("   :members:")
            lines.append("")
        node = nodes.container()
        self.state.nested_parse(StringList(lines, source="public-api"), self.content_offset, node)
        return node.children


# -- benchmarks -----------------------------------------------------------------------


def _read(path: Path) -> pd.DataFrame | None:
    """The CSV, or None when it is missing or empty."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    frame = pd.read_csv(path)
    return frame if len(frame) else None


def _cell(value) -> str:
    return str(value).replace("|", "\\|")


def _number(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, spec)


def list_table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """reStructuredText list-table lines."""
    lines = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {_cell(row[0]) or ' '}")
        lines.extend(f"     - {_cell(value) or ' '}" for value in row[1:])
    return lines + [""]


def problem_tables(rows: pd.DataFrame) -> list[str]:
    """Seconds per problem and library, sklmm's speed-ups, and objectives against lme4's."""
    libraries = [lib for lib in LIBRARIES if lib in set(rows.library)]
    libraries += sorted(set(rows.library) - set(libraries))
    peers = [lib for lib in libraries if lib != "sklmm"]
    seconds, speedups, agreement = [], [], []
    for problem, block in rows.groupby("problem", sort=False):
        by = {row.library: row for row in block.itertuples()}
        first = block.iloc[0]
        line = [str(problem), f"{int(first.n):,}"]
        for lib in libraries:
            row = by.get(lib)
            if row is None:
                line.append("")
            elif row.status == "ok":
                line.append(_number(row.seconds, ".3f"))
            else:
                line.append(str(row.status))
        seconds.append(line)
        line = [str(problem)]
        for lib in peers:
            row = by.get(lib)
            speedup = getattr(row, "sklmm_speedup", math.nan) if row is not None else math.nan
            bound = bool(getattr(row, "speedup_is_lower_bound", False)) if row is not None else False
            line.append("" if pd.isna(speedup) else (">" if bound else "") + f"{speedup:.1f}x")
        speedups.append(line)
        if "objective_minus_lme4" in rows:
            agreement.append([str(problem)] + [
                _number(getattr(by[lib], "objective_minus_lme4", math.nan), "+.1e") if lib in by else ""
                for lib in libraries if lib != "lme4"
            ])
    out = list_table("Fit time in seconds (best of the repeats; a status where the fit did not finish)",
                     ["problem", "n", *libraries], seconds)
    if "sklmm" in libraries and peers and "sklmm_speedup" in rows:
        out += list_table("sklmm's speed-up: the peer's time divided by sklmm's (above 1: sklmm is faster)",
                          ["problem", *[f"vs {lib}" for lib in peers]], speedups)
    if agreement:
        out += list_table(
            "Optimum reached: objective minus lme4's (negative: lower than lme4's)",
            ["problem", *[lib for lib in libraries if lib != "lme4"]],
            agreement,
        )
    return out


def scaling_table(scaling: pd.DataFrame) -> list[str]:
    columns = [
        ("n", "rows n", ",.0f"), ("groups", "groups", ",.0f"), ("lstsq_s", "lstsq s", ".3f"),
        ("fit_s", "fit s", ".3f"), ("fit_over_lstsq", "fit / lstsq", ".1f"), ("setup_s", "cross products s", ".3f"),
        ("eval_ms", "one evaluation ms", ".3f"), ("eval_grad_ms", "evaluation + gradient ms", ".3f"),
        ("n_evaluations", "evaluations", ".0f"), ("peak_mb", "peak MB", ",.0f"),
    ]
    present = [c for c in columns if c[0] in scaling]
    rows = [[_number(getattr(r, key), spec) for key, _, spec in present] for r in scaling.itertuples()]
    return list_table("Scaling with n: y ~ 1 + x0..x9 + (1 | g), 20 rows per group, REML",
                      [label for _, label, _ in present], rows)


def describe_runs(rows: pd.DataFrame | None, scaling: pd.DataFrame | None) -> list[str]:
    lines = []
    if rows is not None:
        for column, label in [("machine", "Machine"), ("run", "Run(s)"), ("sklmm_revision", "sklmm revision")]:
            if column in rows:
                values = sorted({str(v) for v in rows[column].dropna()})
                if values:
                    lines.append(f"- {label}: {', '.join(values)}")
        if "version" in rows:
            versions = rows.dropna(subset=["version"]).drop_duplicates("library")
            text = ", ".join(f"{r.library} {r.version}" for r in versions.itertuples() if str(r.version) not in ("", "nan"))
            if text:
                lines.append(f"- Library versions: {text}")
    if scaling is not None:
        lines.append(f"- Scaling sizes: {', '.join(f'{int(n):,}' for n in scaling.n)}")
    return lines + [""] if lines else []


def benchmark_lines(results: Path = RESULTS, figure: Path = FIGURE) -> list[str]:
    """The reStructuredText of the benchmark results section."""
    rows = _read(results / "latest.csv")
    scaling = _read(results / "scaling_latest.csv")
    if rows is None and scaling is None:
        return [
            ".. note::",
            "",
            "   No benchmark results are stored yet (``benchmarks/results/latest.csv`` and",
            "   ``scaling_latest.csv`` are empty or missing).  They come from",
            "   ``python -m benchmarks.run`` and ``python -m benchmarks.scaling``; see below.",
            "",
        ]
    lines = describe_runs(rows, scaling)
    if figure.exists():
        lines += [f".. figure:: /{figure.relative_to(ROOT / 'docs').as_posix()}", "   :width: 100%",
                  "   :alt: sklmm benchmark figure", "",
                  "   Left: fit time per problem and library (log scale).  Right: sklmm's fit time",
                  "   against n, next to one least-squares pass over the same data.", ""]
    if rows is not None:
        lines += problem_tables(rows)
    if scaling is not None:
        lines += scaling_table(scaling)
    return lines


def results_folder() -> Path:
    """Where the directives read results: ``$SKLMM_BENCHMARK_RESULTS``, else ``benchmarks/results``."""
    return Path(os.environ.get("SKLMM_BENCHMARK_RESULTS", RESULTS))


def _large_runs(results: Path) -> list[dict]:
    """The full-scale ``crossed_large`` records (no ``@scale`` in the name), smallest first."""
    records = []
    for path in sorted(results.glob("crossed_large_*_latest.json")):
        if "@" in path.name:
            continue
        record = json.loads(path.read_text())
        if isinstance(record.get("sklmm"), dict) and record["sklmm"].get("theta") is not None:
            records.append(record)
    return sorted(records, key=lambda r: r["spec"]["n"])


def _lme4_check(record: dict) -> str:
    """What lme4's own objective said at sklmm's optimum and its neighbours."""
    check = record.get("lme4_devfun")
    if check is None:
        return "sklmm's objectives at the points; lme4's not run yet" if record.get("points") else "not run (--no-check)"
    if "error" in check:
        return f"lme4: {check['error']}"
    higher = "every neighbour higher" if check.get("neighbours_higher") else "a neighbour NOT higher"
    return f"equal to {check['relative_difference']:+.1e} relative; {higher}"


def large_crossed_lines(results: Path = RESULTS, published: Path = PUBLISHED) -> list[str]:
    """The reStructuredText table of the full-scale large crossed fits and the published figures."""
    records = _large_runs(results)
    if not records:
        return [".. note::", "", "   No full-scale ``benchmarks/crossed_large.py`` run is stored yet.", ""]
    peers = runpy.run_path(str(published))["PUBLISHED"] if published.exists() else {}
    rows = []
    for record in records:
        fit, spec = record["sklmm"], record["spec"]
        seconds = fit["seconds"] + fit.get("replayed_seconds", 0.0)
        levels = " × ".join(f"{m:,}" for m in record["levels"].values())
        rows.append([
            record["problem"], f"{spec['n']:,}", levels, "sklmm, 2 cores (this machine)",
            f"{seconds:,.0f}", f"{fit['n_iter']}", f"{seconds / max(1, fit['n_iter']):,.0f}",
            f"{fit['peak_rss_mb'] / 1024:.1f} (peak resident)", f"{fit['objective']:,.4f}", _lme4_check(record),
        ])
        for peer in peers.get(record["problem"], []):
            rows.append([
                record["problem"], f"{peer['rows']:,}", " × ".join(f"{m:,}" for m in peer["levels"].values()),
                f"{peer['library']}, {peer['machine']}", f"{peer['fit_seconds']:,.0f}", f"{peer['evaluations']}",
                f"{peer['seconds_per_evaluation']:,.0f}", f"{peer['model_gib']:.1f} (model)", "", peer["source"],
            ])
    return list_table(
        "Crossed models past 20,000 items, full scale (benchmarks/crossed_large.py): REML fits; "
        "lme4 check: lme4's objective at sklmm's theta against sklmm's, and at theta with one component "
        "times (1 -/+ 1e-3)",
        ["problem", "rows", "levels", "who, where", "fit s", "evaluations", "s per evaluation",
         "memory GiB", "REML criterion", "lme4 check / source"],
        rows,
    )


class LargeCrossedResults(SphinxDirective):
    def run(self):
        results = results_folder()
        for path in [*results.glob("crossed_large_*_latest.json"), PUBLISHED]:
            self.env.note_dependency(str(path))
        node = nodes.container()
        self.state.nested_parse(StringList(large_crossed_lines(results), source="large-crossed-results"),
                                self.content_offset, node)
        return node.children


class BenchmarkResults(SphinxDirective):
    def run(self):
        results = results_folder()
        for name in ("latest.csv", "scaling_latest.csv"):
            self.env.note_dependency(str(results / name))
        node = nodes.container()
        self.state.nested_parse(StringList(benchmark_lines(results), source="benchmark-results"), self.content_offset, node)
        return node.children


def skip_foreign_members(app, what, name, obj, skip, options):
    """Document only what sklmm defines: not the methods scikit-learn adds to every
    estimator (``set_fit_request`` ..., whose docstrings cross-reference scikit-learn's
    own site)."""
    if what != "class":
        return None
    target = obj.fget if isinstance(obj, property) else obj
    module = getattr(target, "__module__", None) or ""
    if not module.startswith("sklmm"):
        return True
    return None


# -- optional pages ---------------------------------------------------------------------


def drop_missing_optional_pages(app, docname, source):
    """Remove toctree lines that name an optional page whose file does not exist yet."""
    srcdir = Path(app.srcdir)
    for page in app.config.sklmm_optional_pages:
        if not (srcdir / f"{page}.md").exists():
            source[0] = re.sub(rf"(?m)^{re.escape(page)}\n", "", source[0])


def setup(app):
    app.add_config_value("sklmm_optional_pages", [], "env")
    app.add_directive("public-api", PublicAPI)
    app.add_directive("benchmark-results", BenchmarkResults)
    app.add_directive("large-crossed-results", LargeCrossedResults)
    app.connect("source-read", drop_missing_optional_pages)
    app.connect("autodoc-skip-member", skip_foreign_members)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
