"""Small timing harness shared by the benchmark scripts.

A benchmark is a list of workloads; each workload has one *builder* per peer. A builder takes the
workload's inputs and returns a zero-argument callable that runs the computation once and returns
its result (anything ``np.asarray`` accepts). The harness calls it once to compile / warm up,
checks the result against the reference peer, then times it and reports the median.

Builders signal "this peer is not available here" by raising ``Skip`` (or ``ImportError``); any
other exception is reported as an error in the table and the run carries on.

Measurements that are not the time of a call in this process (start-up time of a new process,
peak memory) are ``Probe`` records instead: one *measure* function per peer, returning one result
per row of the probe together with an output that is checked against the reference peer's.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import statistics
import subprocess
import time
import timeit
from typing import Any, Callable, Mapping, Sequence

import numpy as np


class Skip(Exception):
    """Raised by a builder when its peer cannot run here (missing package or API)."""


@dataclasses.dataclass(frozen=True)
class Workload:
    id: str
    title: str
    sizes: Mapping[str, int]
    quick_sizes: Mapping[str, int]
    make_inputs: Callable[[Mapping[str, int], np.random.Generator], dict]
    peers: Mapping[str, Callable[[dict], Callable[[], Any]]]
    rtol: float = 1e-8
    atol: float = 1e-12
    unit: str = "ms"  # a key of UNITS: the table the workload's row goes to
    timer: Callable[[Callable[[], Any]], tuple[float, int]] | None = None  # time_callable if None


@dataclasses.dataclass
class Result:
    status: str  # "ok", "skip", "error", "mismatch"
    median_s: float | None = None
    reps: int = 0
    note: str = ""
    peak_bytes: float | None = None  # memory probes: the measured peak, instead of a time


# Units of the tables: seconds or bytes times the factor gives the figure shown.
UNITS = {"s": 1.0, "ms": 1e3, "µs": 1e6, "MB": 1e-6}


def value(r: Result, unit: str) -> float | None:
    """``r``'s figure in ``unit`` (a time for s/ms/µs, a peak allocation for MB)."""
    raw = r.peak_bytes if unit == "MB" else r.median_s
    return None if raw is None else raw * UNITS[unit]


@dataclasses.dataclass(frozen=True)
class Probe:
    """A measurement made by its own procedure, per peer, with one or more rows.

    ``peers`` maps each peer to a *measure* function ``(sizes, quick, log)`` returning, for each
    label of ``rows``, a pair ``(Result, output)``; ``output`` (anything ``np.asarray`` accepts,
    or None) is checked against the reference peer's output for the same row. ``expected``, when
    given, returns a figure per row (in ``unit``) shown beside the measurements.
    """

    id: str
    title: str
    sizes: Mapping[str, int]
    quick_sizes: Mapping[str, int]
    rows: tuple[str, ...]
    peers: Mapping[str, Callable[..., Mapping[str, tuple[Result, Any]]]]
    unit: str
    expected: Callable[[Mapping[str, int]], Mapping[str, float]] | None = None
    rtol: float = 1e-8
    atol: float = 1e-12

    def key(self, row: str) -> str:
        return f"{self.id} {row}"


# --------------------------------------------------------------------------------------------
# timing


def time_callable(call: Callable[[], Any], budget_s: float = 1.5, min_reps: int = 3,
                  max_reps: int = 25) -> tuple[float, int]:
    """Median wall time of ``call()`` (already warmed up).

    The number of repetitions adapts to the cost of one call: about ``budget_s`` seconds in all,
    at least ``min_reps`` and at most ``max_reps``.
    """
    gc.collect()
    times = []
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
    reps = int(min(max_reps, max(min_reps, budget_s / max(times[0], 1e-9))))
    for _ in range(reps - 1):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def time_per_call(call: Callable[[], Any], number: int = 200,
                  repeat: int = 9) -> tuple[float, int]:
    """Median over ``repeat`` batches of the mean time of ``number`` back-to-back calls.

    For calls of a few microseconds, where the clock's own cost matters.
    """
    gc.collect()
    batches = timeit.Timer(call).repeat(repeat=repeat, number=number)
    return statistics.median(batches) / number, repeat * number


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, (list, tuple)) and len(x) == 1:
        x = x[0]
    return np.asarray(x)


def _compare(got: Any, ref: np.ndarray, rtol: float, atol: float) -> str | None:
    """None when ``got`` agrees with ``ref``, else a short description of the difference."""
    got = _as_array(got)
    if got.shape != ref.shape:
        return f"shape {got.shape} != reference {ref.shape}"
    if not np.all(np.isfinite(got)):
        return "non-finite values"
    if np.allclose(got, ref, rtol=rtol, atol=atol):
        return None
    err = np.abs(got - ref)
    rel = err / np.maximum(np.abs(ref), atol)
    return f"max abs err {err.max():.3g}, max rel err {rel.max():.3g} (rtol {rtol:g})"


def _short(exc: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(exc).split())
    if len(msg) > limit:
        msg = msg[: limit - 3] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def run_workload(w: Workload, quick: bool, reference: str, peer_names: Sequence[str],
                 seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Result]:
    sizes = w.quick_sizes if quick else w.sizes
    inputs = w.make_inputs(sizes, np.random.default_rng(seed))
    results: dict[str, Result] = {}
    ref: np.ndarray | None = None
    # The reference runs first so that every other peer can be checked against it.
    order = [reference] + [p for p in peer_names if p != reference]
    for name in order:
        if name not in w.peers:
            continue
        builder = w.peers[name]
        t_start = time.perf_counter()
        try:
            call = builder(inputs)
            out = _as_array(call())  # warm-up: compiles
        except (Skip, ImportError) as e:
            results[name] = Result("skip", note=_short(e))
            log(f"  {w.id} {name:16s} skipped ({_short(e)})")
            continue
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            results[name] = Result("error", note=_short(e))
            log(f"  {w.id} {name:16s} ERROR {_short(e)}")
            continue
        warm_s = time.perf_counter() - t_start
        if name == reference:
            ref = np.array(out, copy=True)
        elif ref is not None:
            diff = _compare(out, ref, w.rtol, w.atol)
            if diff is not None:
                results[name] = Result("mismatch", note=diff)
                log(f"  {w.id} {name:16s} MISMATCH {diff}")
                continue
        try:
            med, reps = (w.timer or time_callable)(call)
        except Exception as e:  # noqa: BLE001
            results[name] = Result("error", note=_short(e))
            log(f"  {w.id} {name:16s} ERROR while timing: {_short(e)}")
            continue
        results[name] = Result("ok", med, reps)
        log(f"  {w.id} {name:16s} {med * UNITS[w.unit]:10.3f} {w.unit}  (median of {reps}; "
            f"first call incl. build/compile {warm_s:.2f} s)")
    return results


def run_probe(p: Probe, quick: bool, reference: str, peer_names: Sequence[str],
              log: Callable[[str], None] = print) -> dict[str, dict[str, Result]]:
    """``{row key: {peer: Result}}`` for every row of ``p``; the reference peer runs first."""
    sizes = p.quick_sizes if quick else p.sizes
    results: dict[str, dict[str, Result]] = {p.key(row): {} for row in p.rows}
    refs: dict[str, np.ndarray] = {}
    order = [reference] + [q for q in peer_names if q != reference]
    for name in order:
        if name not in p.peers:
            continue
        try:
            measured = p.peers[name](sizes, quick, log)
        except (Skip, ImportError) as e:
            measured = {row: (Result("skip", note=_short(e)), None) for row in p.rows}
        except Exception as e:  # noqa: BLE001
            measured = {row: (Result("error", note=_short(e)), None) for row in p.rows}
        for row in p.rows:
            r, out = measured.get(row, (Result("skip", note="not measured"), None))
            if r.status == "ok" and out is not None:
                out = _as_array(out)
                if name == reference:
                    refs[row] = np.array(out, copy=True)
                elif row in refs:
                    diff = _compare(out, refs[row], p.rtol, p.atol)
                    if diff is not None:
                        r = Result("mismatch", note=diff)
            results[p.key(row)][name] = r
            shown = (f"{value(r, p.unit):10.3f} {p.unit}  ({r.note})" if r.status == "ok"
                     else f"{r.status.upper()} {r.note}")
            log(f"  {p.key(row)} {name:16s} {shown}")
    return results


# --------------------------------------------------------------------------------------------
# reporting


def format_rows(rows: Sequence[tuple[str, Mapping[str, Result], Sequence[str]]],
                peer_names: Sequence[str], ratios: Sequence[tuple[str, str]], unit: str = "ms",
                extra_headers: Sequence[str] = ()) -> str:
    """Markdown table: one row per ``(label, {peer: Result}, extra cells)``, figures in ``unit``,
    then the extra columns, then ratio columns.

    ``ratios`` lists ``(numerator, denominator)`` peer pairs. When the numerator has a ``-jit``
    variant that was measured, its ratio is shown in parentheses.
    """
    notes: list[str] = []

    def cell(r: Result | None) -> str:
        if r is None:
            return ""
        if r.status == "ok":
            v = value(r, unit)
            return f"{v:.3g}" if v < 100 else f"{v:.0f}"
        if r.status == "skip":
            return "n/a"
        notes.append(r.note)
        label = "MISMATCH" if r.status == "mismatch" else "ERROR"
        return f"{label} [{len(notes)}]"

    def ratio(res: Mapping[str, Result], num: str, den: str) -> str:
        d = res.get(den)
        if d is None or d.status != "ok" or not value(d, unit):
            return ""
        parts = []
        for variant, fmt in ((num, "{:.2f}"), (num + "-jit", "jit {:.2f}")):
            r = res.get(variant)
            if r is not None and r.status == "ok":
                parts.append(fmt.format(value(r, unit) / value(d, unit)))
        if not parts:
            return ""
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({parts[1]})"

    header = ["workload", *[f"{p} {unit}" for p in peer_names], *extra_headers,
              *[f"{n}/{d}" for n, d in ratios]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, res, extras in rows:
        row = [label, *[cell(res.get(p)) for p in peer_names], *extras,
               *[ratio(res, n, d) for n, d in ratios]]
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines.append("")
        lines.extend(f"[{i}] {n}" for i, n in enumerate(notes, 1))
    return "\n".join(lines)


def size_label(sizes: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


def workload_rows(workloads: Sequence[Workload],
                  all_results: Mapping[str, Mapping[str, Result]],
                  quick: bool) -> list[tuple[str, Mapping[str, Result], Sequence[str]]]:
    rows = []
    for w in workloads:
        res = all_results.get(w.id)
        if res is not None:
            sizes = w.quick_sizes if quick else w.sizes
            rows.append((f"{w.id} ({size_label(sizes)})", res, ()))
    return rows


def probe_rows(p: Probe, all_results: Mapping[str, Mapping[str, Result]],
               quick: bool) -> list[tuple[str, Mapping[str, Result], Sequence[str]]]:
    """Rows of a probe; with ``p.expected``, one extra cell per row (the expected figure)."""
    sizes = p.quick_sizes if quick else p.sizes
    expected = p.expected(sizes) if p.expected else None
    rows = []
    for row in p.rows:
        res = all_results.get(p.key(row))
        if res is not None:
            extras = (f"{expected[row]:.3g}",) if expected else ()
            rows.append((f"{p.key(row)} ({size_label(sizes)})", res, extras))
    return rows


def format_table(workloads: Sequence[Workload], all_results: Mapping[str, Mapping[str, Result]],
                 peer_names: Sequence[str], ratios: Sequence[tuple[str, str]],
                 quick: bool, unit: str = "ms") -> str:
    """Markdown table of ``workloads``: one row per workload, medians in ``unit``, then ratios."""
    return format_rows(workload_rows(workloads, all_results, quick), peer_names, ratios, unit)


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ModuleNotFoundError:
        return "not installed"
    except Exception as e:  # noqa: BLE001
        return f"fails to import ({type(e).__name__})"
    return getattr(mod, "__version__", "?")


def machine_info(repo_root: str | None = None) -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": cpu,
        "cores": f"{usable} usable of {os.cpu_count()}",
        "python": platform.python_version(),
    }
    for mod in ("numpy", "scipy", "numba", "jax", "jaxlib", "pytensor", "numbascan"):
        info[mod] = _version(mod)
    if repo_root is not None:
        try:
            rev = subprocess.run(["git", "-C", repo_root, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=5).stdout.strip()
            if rev:
                info["numbascan commit"] = rev
        except (OSError, subprocess.SubprocessError):
            pass
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                      "OPENBLAS_CORETYPE", "NUMBA_NUM_THREADS", "XLA_FLAGS",
                                      "NUMBASCAN_MODE") if k in os.environ}
    if env:
        info["environment"] = " ".join(f"{k}={v}" for k, v in env.items())
    return info


def write_json(path: str, info: Mapping[str, str],
               all_results: Mapping[str, Mapping[str, Result]], quick: bool) -> None:
    payload = {
        "machine": dict(info),
        "quick": quick,
        "results": {w: {p: dataclasses.asdict(r) for p, r in res.items()}
                    for w, res in all_results.items()},
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


# --------------------------------------------------------------------------------------------
# chart


def _bar_colors(peer_names: Sequence[str], highlight: str, own: str) -> dict[str, str]:
    """``own``'s bars in blues, ``highlight``'s in red, every other peer in a shade of grey."""
    greys = iter(["#969696", "#bdbdbd", "#737373", "#d9d9d9", "#525252", "#e5e5e5"] * 4)
    blues = iter(["#1f5fa8", "#6baed6", "#9ecae1"] * 4)
    return {p: "#d62728" if p == highlight else next(blues) if p.startswith(own) else next(greys)
            for p in peer_names}


def write_chart(path: str, sections: Sequence[tuple[str, str, Sequence[tuple]]],
                peer_names: Sequence[str], highlight: str = "jax",
                ratio_of: tuple[str, str] = ("numbascan", "jax")) -> str:
    """Bar chart of ``sections``, each ``(title, unit, rows)`` with rows as ``format_rows`` takes
    them: one panel per section (sections with few rows share a line), a group of bars per row,
    one bar per peer, log scale.

    ``highlight``'s bars are red with a black edge; the bars of ``ratio_of[0]`` and of its
    ``-jit`` variant carry their ratio to ``ratio_of[1]``. In MB panels the row's expected
    figure (its first extra cell) is a dashed line. Returns a line for the log.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, so no chart was written (pip install matplotlib)"
    import textwrap

    sections = [s for s in sections if s[2]]
    if not sections:
        return "nothing to chart"
    colors = _bar_colors(peer_names, highlight, ratio_of[0])
    spans = [len(rows) + 0.5 for _, _, rows in sections]  # panel widths, in groups of bars
    capacity = max(4.5, *spans)
    lines: list[list[int]] = []  # sections sharing a line of the figure, by index
    for i, span in enumerate(spans):
        if not lines or sum(spans[j] for j in lines[-1]) + span > capacity:
            lines.append([])
        lines[-1].append(i)
    fig = plt.figure(figsize=(max(10.0, 2.0 * capacity + 2.0), 4.2 * len(lines)))
    grid = fig.add_gridspec(len(lines), 1)
    axes = [None] * len(sections)
    for k, line in enumerate(lines):
        sub = grid[k].subgridspec(1, len(line), width_ratios=[spans[i] for i in line])
        for m, i in enumerate(line):
            axes[i] = fig.add_subplot(sub[0, m])
    width = 0.84 / len(peer_names)
    for ax, (title, unit, rows) in zip(axes, sections):
        figures = [{p: value(r, unit) for p, r in res.items() if r.status == "ok"}
                   for _, res, _ in rows]
        positive = [v for f in figures for v in f.values() if v and v > 0]
        floor = min(positive) / 4 if positive else 1e-3
        for i, p in enumerate(peer_names):
            xs = [k - 0.42 + (i + 0.5) * width for k, f in enumerate(figures) if p in f]
            vs = [f[p] for f in figures if p in f]
            if not xs:
                continue
            ax.bar(xs, [max(v, floor) for v in vs], width, label=p, color=colors[p],
                   edgecolor="black" if p == highlight else "none", linewidth=1.2, zorder=2)
            if p not in (ratio_of[0], ratio_of[0] + "-jit"):
                continue
            for x, v, f in zip(xs, vs, (f for f in figures if p in f)):
                den = f.get(ratio_of[1])
                if den:
                    ax.annotate(f"{v / den:.2f}x", (x, max(v, floor)), xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom",
                                rotation=90, fontsize=7)
        if unit == "MB":
            for k, (_, _, extras) in enumerate(rows):
                if extras:
                    ax.hlines(float(extras[0]), k - 0.45, k + 0.45, colors="black",
                              linestyles="dashed", linewidth=1,
                              label="expected" if k == 0 else None, zorder=3)
        ax.set_yscale("log")
        top = max(positive, default=1.0)
        ax.set_ylim(floor / 2, top * 12)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([label.replace(" (", "\n(", 1) for label, _, _ in rows], fontsize=8)
        ax.set_xlim(-0.5, len(rows) - 0.5)
        ax.set_ylabel(f"{unit} (log scale)")
        ax.set_title(textwrap.fill(title, int(22 * (len(rows) + 0.5))), fontsize=9)
        ax.grid(axis="y", which="major", alpha=0.3, zorder=0)
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles),
               fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(f"lower is better; labels on the {ratio_of[0]} bars: {ratio_of[0]} / "
                 f"{ratio_of[1]}", fontsize=9, y=0.995 - 0.35 / fig.get_figheight())
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"Chart written to {path}"
