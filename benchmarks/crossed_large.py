"""Large crossed models (users x items): sklmm's fit, lme4 and mixedlm under a limit, lme4's objective at sklmm's optimum.

``python -m benchmarks.crossed_large --problem crossed_600k_60k_30k --scale S
[--libraries sklmm lme4 mixedlm] [--limit SECONDS] [--no-check]``

1. sklmm fits the problem (``benchmarks/problems.py``: ``crossed_600k_60k_30k``,
   ``y ~ 1 + x1 + x2 + (1 | user) + (1 | item)``, or ``ml_latest_shape``,
   ``y ~ 1 + (1 | user) + (1 | item)``; REML) in this process, after a
   warm-up fit of sleepstudy.  Printed: fit time, evaluations (``n_iter_``:
   the optimiser's objective evaluations, each with its gradient, counted by
   ``sklmm._engine.optimize``; the two evaluations that choose between lme4's
   start and the moment start are included), convergence, theta, sigma,
   the REML criterion, the process's resident memory before the fit and its
   peak during the fit (the kernel's high-water mark VmHWM, reset before the
   fit through ``/proc/self/clear_refs``, and a thread sampling VmRSS every
   0.05 s; the larger is reported), and the load average (``/proc/loadavg``,
   as ``uptime``) before and after.
2. lme4 and mixedlm (``--libraries``) fit the same data in a subprocess each
   (``benchmarks/adapters``) killed with its children after ``--limit``
   seconds: ``no result in N s``.
3. The confirmation (unless ``--no-check``): sklmm's objective at theta_hat
   and at theta_hat with one component multiplied by (1 -/+ ``--step``)
   (sklmm's own criterion function, ``ProfiledDeviance.objective``, timed), then
   ``benchmarks/lme4_devfun_check.R``: lme4's ``lmer(..., devFunOnly = TRUE)``
   at the same points, with OpenBLAS first on R's library path (R's
   system BLAS here is the reference BLAS, far slower for CHOLMOD's dense
   supernodes; ``--system-blas`` keeps it).  It holds when lme4's value at
   sklmm's theta equals sklmm's objective and every neighbour is higher.

The data go to R once, as raw column files (``Problem.save``) under
``$SKLMM_BENCH_CACHE`` (default ``/tmp/sklmm-bench-cache``), outside the
repository; a folder already written for the same problem is reused.

Output: ``benchmarks/results/crossed_large_<problem>_latest.txt`` (the
report) and ``crossed_large_<problem>_latest.json`` (theta, objective,
evaluations, the check's points and lme4's values), ``<problem>`` the
problem's name with ``@scale`` when shrunk.  ``--check-only`` runs step 3
from the JSON of an earlier run (sklmm's neighbour objectives included),
without fitting again.

MixedModels.jl's published figures for MovieLens ml-latest
---------------------------------------------------------
``rating ~ 1 + (1 | userId) + (1 | movieId)`` fitted by MixedModels.jl
(Bates et al., *Embrace Uncertainty*, chapter "A large-scale observational
study", ``largescaleobserved.qmd``; table ``data/sizespeed.csv`` of
https://github.com/JuliaMixedModels/EmbraceUncertainty, commit 50974dd9),
on "compute servers with generous amounts of memory (128 GiB/node) and
numbers of compute cores (48/node)".  Columns: ``mc``/``uc`` the minimum
ratings per movie/user kept, ``modelsz`` and ``L22sz`` the model and its dense
movie x movie block of L in GiB, ``nv`` evaluations, ``fittime`` and
``evtime`` seconds.

===  ===  ==========  =======  ======  =======  =====  ==  ========  =======
mc   uc   ratings     users    movies  modelsz  L22sz  nv  fittime   evtime
===  ===  ==========  =======  ======  =======  =====  ==  ========  =======
1    5    27,716,748  266,980  53,883  24.34    21.63  20  7,352.6   303.9
1    10   27,565,774  243,658  53,852  24.30    21.61  23  7,463.8   297.5
2    5    27,706,599  266,980  43,734  16.96    14.25  20  4,938.6   245.9
5    5    27,671,580  266,979  30,824   9.78     7.08  23  2,703.4   113.1
20   5    27,551,352  266,978  18,366   5.21     2.51  19  1,266.4    63.8
===  ===  ==========  =======  ======  =======  =====  ==  ========  =======

The first row is the whole of ml-latest (every movie, the users with at
least 5 ratings): 20 evaluations of 304 s, 7,353 s (2 h 3 min) in all, a
24.3 GiB model of which 21.6 GiB is the dense 53,883-square block.  That is
the shape ``problems.ml_latest_shape`` simulates; its figures are in
``benchmarks/published.py``, which this report and the documentation's
benchmarks page print beside sklmm's full-scale fit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from . import adapters
from .problems import PROBLEMS, Problem
from .published import PUBLISHED

RESULTS = Path(__file__).resolve().parent / "results"
R_SCRIPT = Path(__file__).resolve().with_name("lme4_devfun_check.R")
CACHE = Path(os.environ.get("SKLMM_BENCH_CACHE", Path(tempfile.gettempdir()) / "sklmm-bench-cache"))
#: Debian's OpenBLAS (``apt-get install libopenblas0-pthread``): libblas.so.3 and liblapack.so.3.
OPENBLAS_DIR = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread")
#: The problems this benchmark is for.
LARGE_PROBLEMS = ("crossed_600k_60k_30k", "ml_latest_shape")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _status_kib(field: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


class PeakMemory:
    """Resident memory of this process before a block and its peak inside it (MiB).

    The kernel's high-water mark (VmHWM) is reset on entry (``5`` written to
    ``/proc/self/clear_refs``, Linux 4.0+) and read on exit; a thread also
    samples VmRSS every ``interval`` seconds, in case the reset is refused.
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.before_mb = self.peak_mb = float("nan")
        self.reset = False

    def __enter__(self):
        self.before_mb = _status_kib("VmRSS") / 1024.0
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        self._sampled = self.before_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self._sampled = max(self._sampled, _status_kib("VmRSS") / 1024.0)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sampled = max(self._sampled, _status_kib("VmRSS") / 1024.0)
        high_water = _status_kib("VmHWM") / 1024.0 if self.reset else float("nan")
        self.peak_mb = max(self._sampled, high_water) if self.reset else self._sampled
        return False


def problem_folder(problem: Problem) -> Path:
    """The problem's raw column files under CACHE, written once (reused when the spec matches)."""
    folder = CACHE / problem.name
    spec_file = folder / "problem.json"
    if spec_file.exists():
        saved = json.loads(spec_file.read_text())
        saved.pop("columns", None)
        if saved == json.loads(json.dumps(problem.spec())):
            return folder
    return problem.save(folder)


def evaluation_line(entry: dict) -> str:
    """One evaluation of the fit as the report prints it (seconds since the fit began, kind, its seconds, theta, value)."""
    note = "  (read back from the journal: its seconds when computed)" if entry.get("replayed") else ""
    return (f"    {entry['at']:9.1f} s  {entry['kind']}  {entry['seconds']:8.1f} s  "
            f"theta {np.round(entry['theta'], 6).tolist()}  {entry['value']:.6f}{note}")


class EvaluationLog:
    """Records (and prints, as they happen) every evaluation of sklmm's criterion during a fit.

    Wraps ``ProfiledDeviance.objective`` and ``objective_and_gradient`` while
    active: each record is the seconds since the fit began, ``f`` (objective
    only) or ``g`` (with its gradient), the evaluation's own seconds, theta
    and the value.  A fit of hours shows its progress, and the table of its
    evaluations goes into the JSON.

    With a ``journal`` (a file of JSON lines), each evaluation's theta, value
    and gradient (bit for bit: JSON floats round-trip exactly) and its seconds
    are appended as it ends, and an evaluation at a theta the journal already
    holds is read back instead of computed (``replayed`` in its record, with
    the seconds it took when it was computed).  The optimiser is
    deterministic, so a fit stopped by the end of a machine's session resumes
    where it stopped: the same iterates, the evaluations already paid for
    read back.  The report then states the seconds of this process and the
    seconds of the evaluations computed before.
    """

    def __init__(self, echo=print, journal: Path | None = None):
        self.records: list[dict] = []
        self.echo = echo
        self.journal = journal
        self.known: list[dict] = []
        if journal is not None and journal.exists():
            self.known = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]

    def _lookup(self, theta, need_gradient: bool) -> dict | None:
        theta = [float(t) for t in theta]
        for entry in self.known:
            if entry["theta"] == theta and (entry["kind"] == "g" or not need_gradient):
                return entry
        return None

    def _remember(self, kind: str, theta, value, gradient, seconds: float) -> None:
        if self.journal is None:
            return
        entry = dict(kind=kind, theta=[float(t) for t in theta], value=float(value),
                     gradient=None if gradient is None else [float(g) for g in gradient], seconds=seconds)
        self.known.append(entry)
        with open(self.journal, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def __enter__(self):
        from sklmm._engine import deviance

        self._cls = deviance.ProfiledDeviance
        self._saved = (self._cls.objective, self._cls.objective_and_gradient)
        objective, objective_and_gradient = self._saved
        self.start = time.perf_counter()
        log = self

        def logged_objective(problem, theta):
            began = time.perf_counter()
            known = log._lookup(theta, need_gradient=False)
            if known is not None:
                problem._last_factorization = None
                log.record("f", began, theta, known["value"], replayed=known["seconds"])
                return known["value"]
            value = objective(problem, theta)
            log.record("f", began, theta, value)
            log._remember("f", theta, value, None, log.records[-1]["seconds"])
            return value

        def logged_objective_and_gradient(problem, theta):
            began = time.perf_counter()
            known = log._lookup(theta, need_gradient=True)
            if known is not None:
                problem._last_factorization = None  # the fit factors theta_hat again if it was replayed
                log.record("g", began, theta, known["value"], replayed=known["seconds"])
                return known["value"], np.array(known["gradient"])
            value, gradient = objective_and_gradient(problem, theta)
            log.record("g", began, theta, value)
            log._remember("g", theta, value, gradient, log.records[-1]["seconds"])
            return value, gradient

        self._cls.objective, self._cls.objective_and_gradient = logged_objective, logged_objective_and_gradient
        return self

    def record(self, kind: str, began: float, theta, value, replayed: float | None = None) -> None:
        now = time.perf_counter()
        seconds = now - began if replayed is None else replayed
        entry = dict(at=now - self.start, kind=kind, seconds=seconds, theta=[float(t) for t in theta], value=float(value))
        if replayed is not None:
            entry["replayed"] = True
        self.records.append(entry)
        self.echo(evaluation_line(entry))

    @property
    def replayed_seconds(self) -> float:
        """Seconds of the evaluations read back: computed by earlier processes."""
        return sum(r["seconds"] for r in self.records if r.get("replayed"))

    def __exit__(self, *exc):
        self._cls.objective, self._cls.objective_and_gradient = self._saved
        return False


def fit_sklmm(problem: Problem, echo=print, journal: Path | None = None):
    """Fit with sklmm in this process; the fitted model and a dict of what was measured.

    ``journal``: :class:`EvaluationLog`'s file of evaluations, to resume a fit.
    """
    from sklmm import MixedLinearRegressor

    from .adapters import sklmm as sklmm_adapter

    sklmm_adapter.warm_up()
    data = problem.data
    X, y, groups = data[problem.fixed], data[problem.response].to_numpy(), data[problem.groups]
    model = MixedLinearRegressor(random_effects=problem.random_effects, reml=problem.reml)
    load_before = load_average()
    message = ""
    echo("sklmm: each evaluation as it ends (seconds since the fit began, f objective / g with gradient, its seconds, theta, value)")
    with PeakMemory() as memory, warnings.catch_warnings(record=True) as caught, EvaluationLog(echo, journal) as evaluations:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            model.fit(X, y, groups=groups)
            error = None
        except Exception as exc:  # a refusal (a rest block over sklmm's limit) is a result
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
    message = "; ".join(str(w.message) for w in caught)
    measured = dict(
        seconds=seconds, load_before=load_before, load_after=load_average(),
        rss_before_mb=memory.before_mb, peak_rss_mb=memory.peak_mb,
        peak_rss_lifetime_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        warnings=message, error=error, evaluations=evaluations.records,
        replayed_seconds=evaluations.replayed_seconds,
    )
    if error is None:
        measured.update(
            n_iter=int(model.n_iter_), converged=bool(model.converged_), theta=model.theta_.tolist(),
            sigma=float(model.sigma_), objective=float(model.objective_),
            intercept=float(model.intercept_), coef=model.coef_.tolist(),
        )
    return (None if error else model), measured


def unfitted_model(problem: Problem):
    """A MixedLinearRegressor holding the problem's validated training data, not fitted.

    For ``--check-only`` on the JSON of a ``--no-check`` run: :func:`sklmm_objectives`
    needs the training data (``_training_data``), which ``fit`` sets before its first
    evaluation; the fit itself is replaced by keeping the data.
    """
    from sklmm import MixedLinearRegressor

    data = problem.data
    model = MixedLinearRegressor(random_effects=problem.random_effects, reml=problem.reml)
    model._fit_data = lambda training: setattr(model, "_training_data", training) or model
    return model.fit(data[problem.fixed], data[problem.response].to_numpy(), groups=data[problem.groups])


def neighbour_points(theta, step: float) -> list[dict]:
    """theta_hat, then theta_hat with component k multiplied by (1 - step) and (1 + step)."""
    theta = np.asarray(theta, dtype=float)
    points = [dict(label="theta_hat", theta=theta.tolist())]
    for k in range(len(theta)):
        for sign in (-1, 1):
            moved = theta.copy()
            moved[k] *= 1.0 + sign * step
            points.append(dict(label=f"theta[{k}]*(1{'+' if sign > 0 else '-'}{step:g})", theta=moved.tolist()))
    return points


def sklmm_objectives(model, points: list[dict], reml: bool) -> None:
    """sklmm's criterion (ProfiledDeviance.objective) at every point; sets ``sklmm`` and ``sklmm_seconds``."""
    from sklmm._engine.fit import prepare

    problem = prepare(model._training_data, reml).problem
    for point in points:
        start = time.perf_counter()
        point["sklmm"] = float(problem.objective(np.asarray(point["theta"])))
        point["sklmm_seconds"] = time.perf_counter() - start


def r_environment(system_blas: bool) -> dict:
    """Rscript's environment: OpenBLAS first on its library path unless ``system_blas``.

    R's start-up script puts ``R_LD_LIBRARY_PATH`` (by default R's lib and
    /usr/lib/x86_64-linux-gnu) before ``LD_LIBRARY_PATH``, so both are set.
    """
    env = dict(os.environ)
    if not system_blas:
        if not (OPENBLAS_DIR / "libblas.so.3").exists():
            raise SystemExit(f"no OpenBLAS in {OPENBLAS_DIR}: apt-get install -y libopenblas0-pthread (or pass --system-blas)")
        env["R_LD_LIBRARY_PATH"] = f"{OPENBLAS_DIR}:/usr/lib/R/lib:/usr/lib/x86_64-linux-gnu"
        env["LD_LIBRARY_PATH"] = f"{OPENBLAS_DIR}" + (f":{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else "")
    return env


def lme4_devfun(problem_spec: dict, folder: Path, points: list[dict], *, system_blas: bool, timeout: float) -> dict:
    """Run lme4_devfun_check.R on the points; its JSON answer (``error`` on failure or timeout)."""
    with tempfile.TemporaryDirectory(prefix="sklmm-devfun-") as scratch:
        check = Path(scratch) / "check.json"
        answer = Path(scratch) / "answer.json"
        columns = json.loads((folder / "problem.json").read_text())["columns"]
        check.write_text(json.dumps(dict(
            folder=str(folder), n=problem_spec["n"], formula=problem_spec["lme4_formula"], reml=problem_spec["reml"],
            groups=problem_spec["groups"], columns=columns, points=points,
        )))
        errors = Path(scratch) / "stderr.txt"
        with open(errors, "w") as stderr:
            process = subprocess.Popen(["Rscript", str(R_SCRIPT), str(check), str(answer)], env=r_environment(system_blas),
                                       stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True)
            killed = []
            timer = threading.Timer(timeout, lambda: (killed.append(True), os.killpg(process.pid, 9)))
            timer.start()
            out = []
            for line in process.stdout:  # R's progress, as it comes (an evaluation can take minutes)
                print(f"  R| {line.rstrip()}", flush=True)
                out.append(line)
            process.wait()
            timer.cancel()
        out = "".join(out)
        if killed:
            return dict(error=f"no result in {timeout:g} s (Rscript killed)", stdout=out)
        if process.returncode != 0 or not answer.exists():
            err = errors.read_text()
            return dict(error=f"Rscript exit {process.returncode}: " + " | ".join(err.strip().splitlines()[-3:]), stdout=out)
        result = json.loads(answer.read_text())
        result["stdout"] = out
        return result


def check_table(points: list[dict], lme4: dict) -> list[str]:
    """The confirmation table: theta, lme4 devfun, sklmm objective, difference, seconds of each."""
    lines = [f"{'point':<22s} {'theta':<30s} {'lme4 devfun':>20s} {'sklmm objective':>20s} {'lme4 - sklmm':>13s} "
             f"{'lme4 - lme4(hat)':>17s} {'lme4 s':>8s} {'sklmm s':>8s}"]
    at_hat = lme4["points"][0]["lme4"]
    for point, row in zip(points, lme4["points"]):
        theta = ", ".join(f"{t:.8g}" for t in point["theta"])
        lines.append(
            f"{point['label']:<22s} {theta:<30s} {row['lme4']:20.8f} {point.get('sklmm', float('nan')):20.8f} "
            f"{row['lme4'] - point.get('sklmm', float('nan')):+13.2e} {row['lme4'] - at_hat:+17.3e} "
            f"{row['seconds']:8.2f} {point.get('sklmm_seconds', float('nan')):8.2f}"
        )
    hat = lme4["points"][0]
    relative = (hat["lme4"] - points[0]["sklmm"]) / abs(points[0]["sklmm"])
    rises = [row["lme4"] - at_hat for row in lme4["points"][1:]] or [float("nan")]
    verdict = "holds" if all(r > 0 for r in rises) else "FAILS (a neighbour is not higher, or none was evaluated)"
    lines += [
        f"lme4 at sklmm's theta vs sklmm's objective: relative difference {relative:+.2e}; "
        f"every neighbour higher in lme4's objective: {all(r > 0 for r in rises)} (smallest rise {min(rises):.3e}): the confirmation {verdict}",
        f"lme4 setup (lmer devFunOnly=TRUE, incl. one factorisation) {lme4['setup_seconds']:.2f} s; "
        f"devfun evaluations {min(r['seconds'] for r in lme4['points']):.2f}-{max(r['seconds'] for r in lme4['points']):.2f} s "
        f"(CPU {min(r.get('cpu_seconds', float('nan')) for r in lme4['points']):.2f}-{max(r.get('cpu_seconds', float('nan')) for r in lme4['points']):.2f} s, all threads); "
        f"R BLAS: {lme4['blas']}",
    ]
    return lines


def pair_counts(user: np.ndarray, item: np.ndarray, chunk_entries: float = 4e7) -> dict:
    """The item x item structure of the Gram correction A_iu W0 A_ui of a users x items model.

    ``pairs``: distinct item pairs i > j rated by a common user (the nonzeros
    of the Gram correction's strict lower triangle); ``sum_n2``: sum over
    users of (ratings per user)^2 (the multiply-adds of forming it as a sum
    of per-user outer products; ``sum_pairs_by_user`` = sum n (n - 1) / 2 the
    pair incidences, each pair counted once per common user).  Computed by a
    sparse product Z_i' Z_u Z_u' Z_i in chunks of item rows.
    """
    import scipy.sparse as sp

    users, items = int(user.max()) + 1, int(item.max()) + 1
    ones = np.ones(len(user), dtype=np.float32)
    Ziu = sp.csr_matrix((ones, (item, user)), shape=(items, users))
    Zui = Ziu.T.tocsr()
    per_user = np.bincount(user, minlength=users).astype(np.float64)
    step = max(1, int(chunk_entries // items))
    pairs = 0
    start = time.perf_counter()
    for a in range(0, items, step):
        block = (Ziu[a:a + step] @ Zui).tocsr()
        rows = np.repeat(np.arange(a, a + block.shape[0]), np.diff(block.indptr))
        pairs += int(np.count_nonzero(block.indices < rows))
    return dict(
        rows=len(user), users=users, items=items, pairs=pairs,
        density=pairs / (items * (items - 1) / 2), sum_n2=float((per_user**2).sum()),
        sum_pairs_by_user=float((per_user * (per_user - 1) / 2).sum()), max_per_user=int(per_user.max()),
        seconds=time.perf_counter() - start,
    )


def co_rated(user: np.ndarray, item: np.ndarray, first: np.ndarray, second: np.ndarray, chunk: int = 5_000) -> np.ndarray:
    """Whether items ``first[k]`` and ``second[k]`` have a user in common, for each k (a boolean array)."""
    import scipy.sparse as sp

    users, items = int(user.max()) + 1, int(item.max()) + 1
    Ziu = sp.csr_matrix((np.ones(len(user), dtype=np.float32), (item, user)), shape=(items, users))
    out = np.empty(len(first), dtype=bool)
    for a in range(0, len(first), chunk):
        both = Ziu[first[a:a + chunk]].multiply(Ziu[second[a:a + chunk]])
        out[a:a + chunk] = np.asarray(both.sum(axis=1)).ravel() > 0
    return out


def sampled_density(user: np.ndarray, item: np.ndarray, k: int = 100_000, seed: int = 0) -> tuple[float, float]:
    """Share of item pairs i > j co-rated, estimated on k uniformly drawn pairs; (estimate, standard error)."""
    items = int(item.max()) + 1
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, items, size=(2, 2 * k))
    keep = first != second
    first, second = first[keep][:k], second[keep][:k]
    share = float(co_rated(user, item, first, second).mean())
    return share, (share * (1 - share) / len(first)) ** 0.5


#: Above this sum of (ratings per user)^2 the pairs are estimated from a sample of item pairs, not counted.
EXACT_PAIRS_MAX_WORK = 2e9


def measure_pairs(scales: list[float]) -> None:
    """``--pairs``: pair counts of ml_latest_shape at the scales; sum n^2 also at scale 1 (from the counts alone)."""
    from .problems import ML_LATEST_ITEMS, ML_LATEST_ROWS, ML_LATEST_USERS, _ml_latest_counts, ml_latest_pairs

    lines = [
        f"# python -m benchmarks.crossed_large --pairs {' '.join(f'{s:g}' for s in scales)}  "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {load_average()})",
        "# ml_latest_shape: item x item Gram correction A_iu W0 A_ui of y ~ 1 + (1 | user) + (1 | item)",
        f"{'scale':>6s} {'rows':>11s} {'users':>8s} {'items':>7s} {'max n_u':>8s} {'pairs i>j':>14s} {'density':>8s} "
        f"{'sum n_u^2':>11s} {'sum n(n-1)/2':>13s} {'generate s':>10s} {'count s':>8s}",
    ]
    print("\n".join(lines), flush=True)
    for scale in scales:
        start = time.perf_counter()
        user, item, _ = ml_latest_pairs(scale)
        generate = time.perf_counter() - start
        per_user = np.bincount(user).astype(np.float64)
        if (per_user**2).sum() <= EXACT_PAIRS_MAX_WORK:
            c = pair_counts(user, item)
            pairs = f"{c['pairs']:14,d}"
        else:  # 100,000 random item pairs: the share co-rated, +- its standard error
            start = time.perf_counter()
            items = int(item.max()) + 1
            share, se = sampled_density(user, item)
            total = items * (items - 1) / 2
            c = dict(rows=len(user), users=len(per_user), items=items, max_per_user=int(per_user.max()), density=share,
                     sum_n2=float((per_user**2).sum()), sum_pairs_by_user=float((per_user * (per_user - 1) / 2).sum()),
                     seconds=time.perf_counter() - start)
            pairs = f"~{share * total / 1e6:,.0f}M+-{se * total / 1e6:,.0f}M"
            print(f"# scale {scale:g}: pairs estimated from 100,000 random item pairs: share {share:.4f} +- {se:.4f} (s.e.)", flush=True)
            lines.append(f"# scale {scale:g}: pairs estimated from 100,000 random item pairs: share co-rated {share:.4f} +- {se:.4f} (s.e.)")
        del user, item
        line = (f"{scale:6g} {c['rows']:11,d} {c['users']:8,d} {c['items']:7,d} {c['max_per_user']:8,d} {pairs:>14s} "
                f"{c['density']:8.4f} {c['sum_n2']:11.4g} {c['sum_pairs_by_user']:13.4g} {generate:10.1f} {c['seconds']:8.1f}")
        print(line, flush=True)
        lines.append(line)
    counts = _ml_latest_counts(np.random.default_rng(20261130), ML_LATEST_USERS, ML_LATEST_ITEMS, ML_LATEST_ROWS).astype(float)
    line = (f"{1:6g} {ML_LATEST_ROWS:11,d} {ML_LATEST_USERS:8,d} {ML_LATEST_ITEMS:7,d} {int(counts.max()):8,d} {'':>14s} {'':>8s} "
            f"{(counts**2).sum():11.4g} {(counts * (counts - 1) / 2).sum():13.4g}   (the counts per user alone)")
    print(line, flush=True)
    lines.append(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ml_latest_pairs_latest.txt").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="crossed_600k_60k_30k", choices=LARGE_PROBLEMS)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--libraries", nargs="+", default=["sklmm"], choices=["sklmm", "lme4", "mixedlm"])
    parser.add_argument("--limit", type=float, default=600.0, help="seconds before lme4's or mixedlm's fit is killed")
    parser.add_argument("--no-check", action="store_true", help="skip lme4's objective at sklmm's theta")
    parser.add_argument("--check-only", action="store_true", help="only the check, from the JSON of an earlier run")
    parser.add_argument("--step", type=float, default=1e-3, help="relative step of the neighbours")
    parser.add_argument("--max-points", type=int, default=None,
                        help="evaluate only the first N points (theta_hat first; each lme4 evaluation takes minutes at full scale)")
    parser.add_argument("--check-limit", type=float, default=6 * 3600.0, help="seconds before the lme4 check is killed")
    parser.add_argument("--system-blas", action="store_true", help="run R with its system BLAS, not OpenBLAS")
    parser.add_argument("--packed", action="store_true",
                        help="hold the rest block packed (PackedRest) whatever its size, to check that path at small scales")
    parser.add_argument("--streamed", action="store_true",
                        help="with --packed: stream the Gram products (StreamedCross) whatever the pairs' size, to check that path at small scales")
    parser.add_argument("--journal", type=Path, default=None,
                        help="file of the fit's evaluations (JSON lines): appended as they end, read back when the fit is run again (resume)")
    parser.add_argument("--pairs", nargs="+", type=float, metavar="SCALE",
                        help="only count co-rated item pairs of ml_latest_shape at these scales")
    args = parser.parse_args(argv)
    if args.pairs:
        measure_pairs(args.pairs)
        return

    problem = PROBLEMS[args.problem](args.scale)
    path = "_streamed" if args.streamed else "_packed" if args.packed else ""
    stem = f"crossed_large_{problem.name}{path}_latest"
    if args.packed or args.streamed:
        import sklmm._engine.rest

        sklmm._engine.rest.DENSE_REST_MAX = 0
        if args.streamed:
            sklmm._engine.rest.PAIR_MEMORY_FRACTION = 0.0
    report_path, json_path = RESULTS / f"{stem}.txt", RESULTS / f"{stem}.json"
    RESULTS.mkdir(exist_ok=True)
    lines: list[str] = []

    def say(*text: str) -> None:
        for line in text:
            print(line, flush=True)
            lines.append(line)

    levels = problem.n_levels()
    say(f"# python -m benchmarks.crossed_large --problem {args.problem} --scale {args.scale:g}{' --packed' if args.packed else ''}{' --streamed' if args.streamed else ''}  "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores)",
        f"# {problem.description}", f"# {problem.lme4_formula}, REML; levels: "
        + ", ".join(f"{g} {m:,}" for g, m in levels.items()))
    record = dict(problem=problem.name, spec=problem.spec(), levels=levels)

    if args.check_only:
        record = json.loads(json_path.read_text())
        model, measured = None, record["sklmm"]
        evaluations = measured.get("evaluations", [])  # (a record older than the evaluations' log has none)
        say("", f"sklmm: the fit of {record['sklmm'].get('when', 'an earlier run')} (--check-only: not fitted again)"
            + ("; its evaluations (seconds since the fit began, f objective / g with gradient, its seconds, theta, value)" if evaluations else ""))
        say(*(evaluation_line(entry) for entry in evaluations))
        if "points" not in record and measured.get("theta") is not None:
            model = unfitted_model(problem)  # a fit run with --no-check: sklmm's side of the check is still to do
    elif "sklmm" in args.libraries or not args.no_check:
        model, measured = fit_sklmm(problem, echo=say, journal=args.journal)
        measured["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        record["sklmm"] = measured
        import sklmm

        say("", f"sklmm {sklmm.__version__} ({Path(sklmm.__file__).parent})")
    if args.check_only or "sklmm" in args.libraries or not args.no_check:
        say(f"  load before {measured['load_before']}, after {measured['load_after']}")
        if measured["error"]:
            say(f"  no fit after {measured['seconds']:.1f} s: {measured['error']}")
        else:
            before = measured.get("replayed_seconds", 0.0)
            if before:
                say(f"  resumed from the journal: {sum(1 for r in measured['evaluations'] if r.get('replayed'))} evaluations "
                    f"read back, computed earlier in {before:.1f} s; this process {measured['seconds']:.1f} s; "
                    f"the fit's time is their sum, {measured['seconds'] + before:.1f} s (+ the earlier processes' setup)")
            total = measured["seconds"] + before
            say(f"  fit {total:.2f} s, {measured['n_iter']} evaluations "
                f"({total / max(1, measured['n_iter']):.2f} s each, setup included), converged {measured['converged']}",
                f"  theta {measured['theta']}, sigma {measured['sigma']:.8g}, REML criterion {measured['objective']:.10f}",
                f"  resident memory {measured['rss_before_mb']:,.0f} MiB before the fit, peak {measured['peak_rss_mb']:,.0f} MiB "
                f"during it (+{measured['peak_rss_mb'] - measured['rss_before_mb']:,.0f} MiB)")
        if measured["warnings"]:
            say(f"  warnings: {measured['warnings'][:300]}")
        if args.scale == 1.0:
            for peer in PUBLISHED.get(problem.name, []):
                say(f"  beside {peer['library']}: {peer['fit_seconds']:,.1f} s, {peer['evaluations']} evaluations "
                    f"({peer['seconds_per_evaluation']:,.1f} s each), a {peer['model_gib']:.2f} GiB model, "
                    f"on {peer['machine']} ({peer['source']})")

    folder = problem_folder(problem) if (set(args.libraries) - {"sklmm"} or not args.no_check) else None
    for library in [lib for lib in args.libraries if lib != "sklmm"]:
        say("", f"{library}: fit in a subprocess, killed after {args.limit:g} s (load {load_average()})")
        result = adapters.run(library, problem, folder, timeout=args.limit, repeat=1, budget=0.0)
        record[library] = json.loads(result.to_json())
        if result.status == "ok":
            say(f"  fit {result.seconds:.2f} s, {result.n_evaluations} evaluations, objective {result.objective:.10f}, "
                f"peak {result.peak_mb:,.0f} MiB, {result.message}")
        elif result.status == "timeout":
            say(f"  no result in {args.limit:g} s ({result.message})")
        else:
            say(f"  {result.status}: {result.message}")
        say(f"  load after {load_average()}")

    sk = record.get("sklmm", {})
    if not args.no_check and sk.get("theta") is not None:
        if model is not None:
            points = neighbour_points(sk["theta"], args.step)
            sklmm_objectives(model, points, problem.reml)
            record["points"] = points
            del model
        points = record["points"][: args.max_points]
        json_path.write_text(json.dumps(record, indent=1))  # step 1's answer, before the long R run
        say("", f"lme4's objective at sklmm's theta and theta*(1 -/+ {args.step:g}) per component "
            f"({'system' if args.system_blas else 'OpenBLAS'} BLAS for R; load {load_average()})")
        answer = lme4_devfun(record["spec"], folder, points, system_blas=args.system_blas, timeout=args.check_limit)
        record["lme4_devfun"] = {k: v for k, v in answer.items() if k != "stdout"}
        if "error" in answer:
            say(f"  {answer['error']}")
        else:
            say(*check_table(points, answer))
        say(f"  load after {load_average()}")
    json_path.write_text(json.dumps(record, indent=1))
    report_path.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {report_path} and {json_path}")


if __name__ == "__main__":
    main()
