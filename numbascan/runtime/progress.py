"""Stage: runtime — a progress bar for the time loop of an eager scan (`progress=True`).

The bar is tqdm's where tqdm can be imported (the `progress` extra), else one plain line on
stderr, redrawn with `\\r` at most every `REDRAW_S` seconds and ended by a newline. Its total is
the scan's n_steps; an until-scan that stops early closes it at the steps that ran. A bar
appears once the loop has run `DELAY_S` seconds: a loop that ends sooner shows none (a bar
would only flash by, and drawing it would cost more than such a loop).

A compiled loop (mode="cpu") reports through its progress variant (codegen/scanloop.py
`render_time_loop`): it runs its steps in chunks of `every` and stores its count of steps run
into a small int64 array `[count, every]` after each chunk and at its end, while it runs
without the GIL. While it runs, a monitor thread (`_Monitor`) reads the count every `POLL_S`
seconds and moves the bar. A python-mode loop moves the bar itself after each step
(`Bar.update_to`).

`every` (`stride`) makes a run publish its count about `UPDATES` times, and at least every
`MAX_STRIDE` steps: a store per chunk costs nothing next to the chunk's steps, and a heavy
step (a run of few steps) is reported at every step.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np

ENV = "NUMBASCAN_PROGRESS"
DELAY_S = 0.1         # no bar for a loop shorter than this
POLL_S = 0.1          # the monitor reads compiled loops' counts this often
REDRAW_S = 0.1        # the plain line is redrawn at most this often
IDLE_S = 2.0          # the monitor thread ends after this long with no loop to watch
UPDATES = 1000
MAX_STRIDE = 1024


def wanted(progress) -> bool:
    """`progress=` as asked; None: NUMBASCAN_PROGRESS (1/0, also true/false, yes/no, on/off)."""
    if progress is None:
        return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")
    return bool(progress)


def stride(n_steps: int) -> int:
    return max(1, min(MAX_STRIDE, -(-n_steps // UPDATES)))


def describe(fn, name=None) -> str:
    """The bar's label: the scan's `name`, else the step function's name."""
    if name:
        return str(name)
    fn = getattr(fn, "fn", fn) if type(fn).__name__ == "JitFunction" else fn
    return getattr(fn, "__name__", None) or type(fn).__name__


class Bar:
    """A bar of `total` steps, drawn once `DELAY_S` seconds have passed since it was made:
    tqdm's, or without tqdm a plain line on stderr (as it is when the bar is drawn)."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc = total, desc
        self.n = 0                # steps run
        self.shown = 0            # steps the tqdm bar has been given
        self.start = time.monotonic()
        self.drawn = self.start   # the plain line's last redraw
        self.out = None           # the tqdm bar, or the plain line's file, once drawn
        self.tqdm = False

    def update_to(self, n: int):
        """The loop has run `n` steps (a count never goes back)."""
        if n <= self.n:
            return
        self.n = n
        now = time.monotonic()
        if self.out is None:
            if now - self.start < DELAY_S:
                return
            self._open()
        if self.tqdm:
            self.out.update(n - self.shown)
            self.shown = n
        elif now - self.drawn >= REDRAW_S:
            self._draw(now)

    def close(self):
        """Draw the final count and end the bar (nothing when none was drawn and the loop
        ran less than `DELAY_S`)."""
        if self.out is None:
            if time.monotonic() - self.start < DELAY_S:
                return
            self._open()
        if self.tqdm:
            if self.n > self.shown:
                self.out.update(self.n - self.shown)
                self.shown = self.n
            self.out.close()
        else:
            self._draw(time.monotonic())
            self.out.write("\n")
            self.out.flush()

    def _open(self):
        try:
            from tqdm import tqdm
        except ImportError:
            self.out = sys.stderr
            self._draw(time.monotonic())
        else:
            self.tqdm = True
            self.out = tqdm(total=self.total, desc=self.desc, unit="step", file=sys.stderr)
            if isinstance(getattr(self.out, "start_t", None), float):
                self.out.start_t -= time.monotonic() - self.start    # its rate: since our start

    def _draw(self, now):
        self.drawn = now
        share = f" ({100 * self.n // self.total}%)" if self.total else ""
        self.out.write(f"\r{self.desc}: {self.n}/{self.total} steps{share} "
                       f"[{now - self.start:.1f} s]")
        self.out.flush()


def counts(n_steps: int):
    """The array a compiled loop's progress variant publishes into: `[count, every]`."""
    return np.array([0, stride(n_steps)], dtype=np.int64)


class _Watch:
    """A compiled loop in flight: its bar, moved to the count in `published` until `finish`."""

    def __init__(self, bar: Bar, published):
        self.bar, self.published = bar, published
        self.lock = threading.Lock()      # the bar is the monitor's until `done`, then the caller's
        self.done = False

    def poll(self):
        with self.lock:
            if not self.done:
                self.bar.update_to(int(self.published[0]))

    def finish(self):
        with self.lock:
            self.done = True
            self.bar.update_to(int(self.published[0]))
            self.bar.close()


class _Monitor:
    """One thread that polls every compiled loop in flight, started by the first and ending
    after `IDLE_S` seconds with none. A thread per call would cost each call its start (and its
    end or a lingering thread), on a busy machine a time slice: more than a short loop. The
    process's one monitor holds only the watches of loops in flight, under its lock."""

    def __init__(self):
        self._reset()

    def _reset(self):                     # also in a forked child: its parent's thread is gone
        self.lock = threading.Lock()
        self.watches = set()
        self.thread = None

    def add(self, watch: _Watch):
        with self.lock:
            self.watches.add(watch)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="numbascan-progress",
                                               daemon=True)
                self.thread.start()

    def remove(self, watch: _Watch):
        with self.lock:
            self.watches.discard(watch)

    def _run(self):
        idle = 0.0
        while True:
            time.sleep(POLL_S)
            with self.lock:
                watches = list(self.watches)
                if not watches:
                    idle += POLL_S
                    if idle >= IDLE_S:
                        self.thread = None
                        return
                    continue
            idle = 0.0
            for watch in watches:
                watch.poll()


_MONITOR = _Monitor()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_MONITOR._reset)


def run_with_bar(call, published, total: int, desc: str):
    """`call()`, a compiled loop publishing into `published` (`counts`), while the monitor
    thread moves a `Bar` to its count; the bar ends at the count the loop published last."""
    watch = _Watch(Bar(total, desc), published)
    _MONITOR.add(watch)
    try:
        return call()
    finally:
        _MONITOR.remove(watch)
        watch.finish()


class PythonBar:
    """The bar of a python-mode loop (or None when `show` is false): a context manager whose
    value is the `on_step(n)` callback of `scan_python`."""

    def __init__(self, show: bool, total: int, desc: str):
        self.bar = Bar(total, desc) if show else None

    def __enter__(self):
        return self.bar.update_to if self.bar is not None else None

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False
