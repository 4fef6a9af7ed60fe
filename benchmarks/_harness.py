"""Small timing harness shared by the benchmark scripts.

A benchmark is a list of workloads; each workload has one *builder* per peer. A builder takes the
workload's inputs and returns a zero-argument callable that runs the computation once and returns
its result (anything ``np.asarray`` accepts). The harness calls it once to compile / warm up,
checks the result against the reference peer, then times it and reports the median.

Builders signal "this peer is not available here" by raising ``Skip`` (or ``ImportError``); any
other exception is reported as an error in the table and the run carries on.
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


@dataclasses.dataclass
class Result:
    status: str  # "ok", "skip", "error", "mismatch"
    median_s: float | None = None
    reps: int = 0
    note: str = ""


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
            med, reps = time_callable(call)
        except Exception as e:  # noqa: BLE001
            results[name] = Result("error", note=_short(e))
            log(f"  {w.id} {name:16s} ERROR while timing: {_short(e)}")
            continue
        results[name] = Result("ok", med, reps)
        log(f"  {w.id} {name:16s} {med * 1e3:10.3f} ms  (median of {reps}; "
            f"first call incl. build/compile {warm_s:.2f} s)")
    return results


# --------------------------------------------------------------------------------------------
# reporting


def format_table(workloads: Sequence[Workload], all_results: Mapping[str, Mapping[str, Result]],
                 peer_names: Sequence[str], ratios: Sequence[tuple[str, str]],
                 quick: bool) -> str:
    """Markdown table: one row per workload, medians in ms, then ratio columns.

    ``ratios`` lists ``(numerator, denominator)`` peer pairs. When the numerator has a ``-jit``
    variant that was measured, its ratio is shown in parentheses.
    """
    notes: list[str] = []

    def cell(r: Result | None) -> str:
        if r is None:
            return ""
        if r.status == "ok":
            return f"{r.median_s * 1e3:.3g}" if r.median_s * 1e3 < 100 else f"{r.median_s * 1e3:.0f}"
        if r.status == "skip":
            return "n/a"
        notes.append(r.note)
        label = "MISMATCH" if r.status == "mismatch" else "ERROR"
        return f"{label} [{len(notes)}]"

    def ratio(res: Mapping[str, Result], num: str, den: str) -> str:
        d = res.get(den)
        if d is None or d.status != "ok":
            return ""
        parts = []
        for variant, fmt in ((num, "{:.2f}"), (num + "-jit", "jit {:.2f}")):
            r = res.get(variant)
            if r is not None and r.status == "ok":
                parts.append(fmt.format(r.median_s / d.median_s))
        if not parts:
            return ""
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({parts[1]})"

    header = ["workload", *[f"{p} ms" for p in peer_names], *[f"{n}/{d}" for n, d in ratios]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for w in workloads:
        res = all_results.get(w.id)
        if res is None:
            continue
        sizes = w.quick_sizes if quick else w.sizes
        label = f"{w.id} ({', '.join(f'{k}={v}' for k, v in sizes.items())})"
        row = [label, *[cell(res.get(p)) for p in peer_names],
               *[ratio(res, n, d) for n, d in ratios]]
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines.append("")
        lines.extend(f"[{i}] {n}" for i, n in enumerate(notes, 1))
    return "\n".join(lines)


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
