"""Progress bars (`progress=True`, NUMBASCAN_PROGRESS) and compile messages (the `numbascan`
logger): a bar changes no result and ends at the steps that ran; traces and compiles are logged
with their time, and a slow compile warns once per step."""

import io
import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import numbascan as ns
from numbascan.loop.args import normalize
from numbascan.runtime import cache, cpu, log, progress

from conftest import assert_same


def grow(x_t, h):
    """h grows by about x_t each step; stops after the step where it passes 10."""
    h = 0.5 * h + x_t
    return h, ns.until(h > 10.0)


def steady(x_t, h):
    return 0.5 * h + x_t


X = np.arange(50.0)
LONG = np.linspace(0.0, 20.0, 3001)      # its bar publishes every 4 steps; until stops at 753
H0 = np.float64(0.0)


@pytest.fixture
def fake_tqdm(monkeypatch):
    """A stand-in `tqdm` module whose bars record their updates; bars are drawn at once."""
    bars = []

    class Tqdm:
        def __init__(self, total=None, desc=None, unit=None, file=None):
            self.total, self.desc, self.unit = total, desc, unit
            self.updates, self.closed, self.start_t = [], False, 0.0
            bars.append(self)

        @property
        def n(self):
            return sum(self.updates)

        def update(self, k):
            assert not self.closed
            self.updates.append(k)

        def close(self):
            self.closed = True

    module = types.ModuleType("tqdm")
    module.tqdm = Tqdm
    monkeypatch.setitem(sys.modules, "tqdm", module)
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    return bars


@pytest.fixture
def no_tqdm(monkeypatch):
    """`import tqdm` fails: the plain line is drawn, at once."""
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setattr(progress, "DELAY_S", 0.0)


# ------------------------------------------------------------------------------------------------
# progress bars


@pytest.mark.parametrize("mode, xs", [("cpu", X), ("cpu", LONG), ("python", X)])
def test_progress_gives_the_same_results_and_ends_at_the_steps_run(fake_tqdm, mode, xs):
    plain, _ = ns.scan(grow, sequences=xs, outputs_info=H0, mode=mode)
    assert not fake_tqdm
    shown, _ = ns.scan(grow, sequences=xs, outputs_info=H0, mode=mode, progress=True)
    assert_same(shown, plain)
    n_run = len(plain)
    assert 0 < n_run < len(xs)                          # until stopped early
    (bar,) = fake_tqdm
    assert (bar.total, bar.desc, bar.unit, bar.n, bar.closed) == (len(xs), "grow", "step",
                                                                  n_run, True)
    if mode == "python":                                # the Python loop reports each step
        assert bar.updates == [1] * n_run


def test_progress_runs_every_step_without_until(fake_tqdm):
    plain, _ = ns.scan(steady, sequences=X, outputs_info=H0, name="steady scan")
    shown, _ = ns.scan(steady, sequences=X, outputs_info=H0, name="steady scan", progress=True)
    assert_same(shown, plain)
    (bar,) = fake_tqdm
    assert (bar.total, bar.n, bar.desc) == (len(X), len(X), "steady scan")


@pytest.mark.parametrize("mode", ["cpu", "python"])
def test_plain_line_without_tqdm(no_tqdm, capsys, mode):
    xs, _ = ns.scan(grow, sequences=X, outputs_info=H0, mode=mode, progress=True)
    err = capsys.readouterr().err
    assert err.startswith("\rgrow: ") and err.endswith("\n"), repr(err)
    last = err.rstrip("\n").split("\r")[-1]
    assert last.startswith(f"grow: {len(xs)}/{len(X)} steps ({100 * len(xs) // len(X)}%)")


def test_family_and_environment_variable(fake_tqdm, monkeypatch):
    monkeypatch.setenv("NUMBASCAN_PROGRESS", "1")
    last, _ = ns.foldl(steady, sequences=X, outputs_info=H0, mode="python")
    assert [b.n for b in fake_tqdm] == [len(X)]
    ns.map(np.sin, X[:7], mode="python", progress=False)          # the argument wins
    assert len(fake_tqdm) == 1
    monkeypatch.setenv("NUMBASCAN_PROGRESS", "0")
    ns.scan(steady, sequences=X, outputs_info=H0, mode="python")
    assert len(fake_tqdm) == 1
    ns.map(np.sin, X[:7], mode="python", progress=True)
    assert [b.n for b in fake_tqdm] == [len(X), 7]


def test_only_the_outermost_python_scan_has_a_bar(fake_tqdm):
    def outer(x_t, h):
        inner, _ = ns.scan(steady, sequences=np.full(3, x_t), outputs_info=h)
        return inner[-1]

    ns.scan(outer, sequences=X[:5], outputs_info=H0, mode="python", progress=True)
    assert [(b.total, b.n) for b in fake_tqdm] == [(5, 5)]


def test_traced_scans_ignore_progress(fake_tqdm):
    @ns.jit
    def run(xs):
        return ns.scan(steady, sequences=xs, outputs_info=H0, progress=True)[0]

    assert_same(run(X), ns.scan(steady, sequences=X, outputs_info=H0)[0])
    assert not fake_tqdm


def test_a_short_loop_draws_no_bar(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setattr(progress, "DELAY_S", 60.0)
    ns.scan(grow, sequences=X, outputs_info=H0, progress=True)
    ns.scan(grow, sequences=X, outputs_info=H0, mode="python", progress=True)
    assert capsys.readouterr().err == ""


def test_compiled_loop_publishes_its_count(fake_tqdm, monkeypatch):
    """The drawing thread sees only counts the loop published: multiples of the stride,
    growing, then the last count."""
    monkeypatch.setattr(progress, "POLL_S", 1e-4)
    n = 400_000
    xs = np.zeros(n)
    out, _ = ns.scan(steady, sequences=xs, outputs_info=H0, progress=True)
    assert out.shape == (n,)
    (bar,) = fake_tqdm
    every = progress.stride(n)
    seen = np.cumsum(bar.updates)
    assert seen[-1] == n and np.all(np.diff(seen) > 0)
    assert all(c % every == 0 for c in seen[:-1])


def test_progress_variant_is_a_function_of_its_own():
    sa = normalize(grow, X, H0, None, None, -1, False, None, False, False, None)
    ts, _, captures = cache.traced_scan(sa, compile=False)
    plain = cache.compile_scan(ts.ir, ts.layout)
    shown = cache.compile_scan(ts.ir, ts.layout, progress=True)
    assert plain is not shown and plain.__name__ != shown.__name__
    assert "progress" not in ns.show(grow, sequences=X, outputs_info=H0, file=io.StringIO())
    for every in (1, 4, 7, 100):          # until stops at step 7: chunks end before, at, after
        counts = np.array([0, every], dtype=np.int64)
        bufs = cpu.state_buffers(ts, sa, len(X))
        n_run = shown(len(X), *cpu.call_arguments(ts, sa, bufs, captures, cpu.as_argument),
                      counts)
        assert counts[0] == n_run == 7
        assert_same(cpu.results(ts, bufs, n_run)[0][0], ns.scan(grow, X, H0)[0])


def test_stride():
    assert progress.stride(0) == progress.stride(10) == progress.stride(1000) == 1
    assert progress.stride(10_000) == 10
    assert progress.stride(10**9) == progress.MAX_STRIDE


# ------------------------------------------------------------------------------------------------
# compile messages


def _events(caplog, kind):
    return [r for r in caplog.records if getattr(r, "numbascan_event", None) == kind]


def test_traces_and_compiles_are_logged_and_a_slow_compile_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(log, "SLOW_COMPILE_S", 0.0)
    monkeypatch.setattr(log, "_SLOW_SEEN", set())
    caplog.set_level(logging.INFO, logger="numbascan")

    def logged_step(x_t, h):            # a constant of its own: code no other test compiled
        return h * 0.375 + x_t * 1.625

    for dtype in (np.float64, np.float32):     # two traces and compiles of one step
        xs = np.arange(4, dtype=dtype)
        ns.scan(logged_step, sequences=xs, outputs_info=np.zeros((), dtype))
    traces, compiles = _events(caplog, "trace"), _events(caplog, "compile")
    assert [r.numbascan_what for r in traces] == ["step 'test_traces_and_compiles_are_logged_"
                                                  "and_a_slow_compile_warns_once.<locals>."
                                                  "logged_step'"] * 2
    assert len(compiles) == 2 and all(r.levelno == logging.INFO and r.numbascan_seconds >= 0 and
                                      r.numbascan_function.startswith("scan_") and
                                      isinstance(r.numbascan_cached, bool) for r in compiles)
    assert "logged_step" in compiles[0].getMessage()
    slow = _events(caplog, "slow_compile")
    assert len(slow) == 1 and slow[0].levelno == logging.WARNING
    assert slow[0].getMessage().startswith("compiling step '") and " took " in \
        slow[0].getMessage()

    caplog.clear()                       # a cached call: nothing traced, nothing compiled
    ns.scan(logged_step, sequences=np.arange(9.0), outputs_info=np.float64(1))
    assert not _events(caplog, "trace") and not _events(caplog, "compile")


def test_jit_programs_are_logged(caplog):
    caplog.set_level(logging.INFO, logger="numbascan")

    @ns.jit
    def logged_program(x):
        return (x * 2.875).sum()

    assert logged_program(np.arange(3.0)) == pytest.approx(8.625)
    (trace,) = _events(caplog, "trace")
    assert trace.numbascan_what.startswith("function '") and "logged_program" in \
        trace.numbascan_what
    (compiled,) = _events(caplog, "compile")
    assert compiled.numbascan_function.startswith("main_")


def test_nothing_is_logged_below_warning_by_default(caplog):
    caplog.set_level(logging.WARNING)
    ns.scan(steady, sequences=X, outputs_info=H0)
    assert not [r for r in caplog.records if r.name == "numbascan"]


def test_numbascan_log_configures_a_stderr_handler():
    logger = logging.getLogger("numbascan")
    handlers, level = list(logger.handlers), logger.level
    root_handlers = list(logging.getLogger().handlers)
    try:
        assert log.configure_from_env({}) is None and logger.handlers == handlers
        handler = log.configure_from_env({"NUMBASCAN_LOG": "debug"})
        assert handler in logger.handlers and logger.level == logging.DEBUG
        assert handler.stream is sys.stderr
        assert log.configure_from_env({"NUMBASCAN_LOG": "warning"}) is handler   # one handler
        assert logger.level == logging.WARNING and logger.handlers.count(handler) == 1
        log.configure_from_env({"NUMBASCAN_LOG": "1"})
        assert logger.level == logging.INFO
        assert logging.getLogger().handlers == root_handlers
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def test_numbascan_log_is_read_at_import():
    code = ("import logging, numbascan; lg = logging.getLogger('numbascan'); "
            "print(lg.level, len(lg.handlers), len(logging.getLogger().handlers))")
    env = dict(os.environ, NUMBASCAN_LOG="debug")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(logging.DEBUG), "1", "0"]
