"""Stage: layout — the roles and taps of a scan, and the step index arithmetic they imply.

A `Layout` is everything about a scan except its step program and array values: it is part
of the compiled code's cache key. The step program's inputs come in this order:

    [taps of every sequence] [taps of every fed-back output, then of every updated shared]
    [non_sequences] [captures] [(key, base) of every random stream]

and its outputs are [fn's outputs] [new values of the updated shared] [until condition].

A scan equation (loop/primitive.py) takes the step's outer values in the same roles, then, when
`trip` is set, two run-time int64 scalars: `trip` (at most this many steps run; the static
`n_steps` is the bound that sizes the buffers) and `origin` (go_backwards walks the sequences
from the row that step `origin - 1` of a forward walk reads, not from their end: the backward
pass of a loop that ran `origin` steps). A scan that `counts_steps` (until or trip) has one
more output, last: the number of steps that ran.

Buffer layout of a fed-back output with `L = max(-taps)`:
    keep="all":  buf[L + t] holds out[t]; buf[:L] holds the initial states (out[-L:]).
    keep="last": a ring of R = L + 1 rows, out[t] at buf[(L + t) % R].
A map output (no taps) uses buf[t] (keep="all") or buf[0] (keep="last"). A window of the last
L states (the initial states; the locals a loop carries them in) holds out[t + tap] at row
L + tap, row 0 the oldest.
Sequence `s` with taps read at step t:  s[t + m + tap] (forwards) or
s[len(s) - 1 - (t + m + tap)] (go_backwards), m = max(0, -min(taps)), or, with a run-time
origin, s[origin + M - 1 - t - tap] (go_backwards from the origin, M = max(0, max(taps))).
The draws of random stream j at step t start from counter base + offset + t * per_step, with
(offset, per_step) = rng[j].

The methods below are the one place these rows are computed: with ints for the drivers and
the reference loops, as source text (`t` a name) for the code generators.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SeqLayout:
    taps: tuple

    @property
    def m(self):
        return max(0, -min(self.taps))

    @property
    def M(self):
        return max(0, max(self.taps))

    @property
    def halo(self):
        """Rows read beyond one per step: m before the first step's row, M after the last."""
        return self.m + self.M

    def steps(self, length):
        """The number of steps a sequence of `length` rows supports (`length` may be traced:
        returned as it is when there is no halo)."""
        return length - self.halo if self.halo else length

    def length(self, n_steps):
        """The rows that `n_steps` steps read: n_steps + m + M."""
        return n_steps + self.halo

    def row(self, t, tap, go_backwards=False, length="len(seq)", origin=None):
        """The row step `t` reads for `tap`: an int, or source text when `t`, `length` or
        `origin` are names (the code generators)."""
        if not go_backwards:
            return _affine(t, self.m + tap)
        if origin is not None:
            return _affine(origin, self.M - 1 - tap, minus=t)
        return _affine(length, -1 - self.m - tap, minus=t)

    def rows(self, seq, t, go_backwards, origin=None):
        """The rows of `seq` that step t reads, one per tap (reference loops)."""
        return [seq[self.row(t, tap, go_backwards, len(seq), origin)] for tap in self.taps]


@dataclass(frozen=True)
class OutLayout:
    taps: tuple            # () for a map output, negative ints for a fed-back one
    keep: str = "all"      # "all" | "last"

    @property
    def L(self):
        return max(-t for t in self.taps) if self.taps else 0

    @property
    def rows(self):
        """Rows of the buffer for n steps (None: depends on n)."""
        if self.keep == "last":
            return self.L + 1 if self.taps else 1
        return None

    def buffer_rows(self, n):
        """Rows of the buffer for n steps."""
        return self.rows if self.rows is not None else self.L + n

    @property
    def init_rows(self):
        """The buffer rows that hold the initial states (out[-L:]) before the first step."""
        return slice(0, self.L)

    def window_row(self, tap):
        """The row `tap` reads in a window of the last L states (row 0 the oldest: out[t - L]
        at step t); the initial states are the window of step 0."""
        return self.L + tap

    def write_row(self, t):
        """The buffer row that receives step t's value (`t` an int or source text)."""
        if self.keep == "last":
            return _ring(_plus(t, self.L), self.rows) if self.taps else 0
        return _plus(t, self.L) if self.taps else t

    def read_row(self, t, tap):
        """The buffer row that step t reads for `tap` (t + tap's value)."""
        row = _plus(t, self.window_row(tap))
        return _ring(row, self.rows) if self.keep == "last" else row

    def last_row(self, n_run):
        """The buffer row holding the last value after `n_run` steps: the row that step
        n_run - 1 wrote (the last initial state when no step ran)."""
        return self.write_row(n_run - 1 if _is_int(n_run) else f"{n_run} - 1")

    def step_rows(self, n_rows=None):
        """The buffer rows of steps 0 .. n_rows - 1 of an output kept whole (every step of
        the buffer when n_rows is None)."""
        return slice(self.L, None if n_rows is None else self.L + n_rows)


@dataclass(frozen=True)
class Layout:
    seqs: tuple = ()          # SeqLayout per sequence
    outs: tuple = ()          # OutLayout per fn output, then per updated shared (taps (-1,))
    n_outputs: int = 0        # how many of `outs` are fn outputs
    n_nonseqs: int = 0
    n_captures: int = 0
    rng: tuple = ()           # (offset, counters per step) per random stream
    until: bool = False
    go_backwards: bool = False
    parallel: bool = False    # no fed-back outputs, no until: steps may run at the same time
    trip: bool = False        # run-time trip count and origin inputs (see the module docstring)

    @property
    def counts_steps(self):
        """Whether the number of steps run is a run-time value (an extra last output)."""
        return self.until or self.trip

    @property
    def n_dynamic(self):
        return 2 if self.trip else 0

    @property
    def fed(self):
        """Indices in `outs` of the fed-back outputs (those with taps: they have inits)."""
        return [i for i, o in enumerate(self.outs) if o.taps]

    @property
    def n_rng_args(self):
        """Inputs per random stream: its key and its counter base."""
        return 2 * len(self.rng)

    def split_inputs(self, ins):
        """A scan equation's inputs by role: (seqs, inits, rest, rng, dynamic); `rest` holds
        the non_sequences then the captures, `dynamic` (trip, origin) or ()."""
        ins = list(ins)
        ns, nf = len(self.seqs), len(self.fed)
        end = len(ins) - self.n_dynamic
        nr = self.n_rng_args
        return (ins[:ns], ins[ns:ns + nf], ins[ns + nf:end - nr], ins[end - nr:end], ins[end:])

    def split_step_inputs(self, ins):
        """The step program's inputs by role: (taps of each sequence, taps of each output
        (none for a map output), rest, rng); `rest` holds the non_sequences then the
        captures, `rng` the (key, base) pairs."""
        ins = list(ins)
        seqs = _groups(ins, 0, [len(sl.taps) for sl in self.seqs])
        states = _groups(ins, self.n_seq_args, [len(o.taps) for o in self.outs])
        start, end = self.n_seq_args + self.n_state_args, len(ins) - self.n_rng_args
        return seqs, states, ins[start:end], ins[end:]

    @property
    def n_seq_args(self):
        return sum(len(s.taps) for s in self.seqs)

    @property
    def n_state_args(self):
        return sum(len(o.taps) for o in self.outs)

    def rng_base(self, j, base, t):
        """The counter that the draws of random stream j start from at step t: base + offset
        + t * per_step (mod 2**64); an int, or source text when `base` and `t` are names."""
        offset, per_step = self.rng[j]
        if _is_int(base) and _is_int(t):
            return (base + offset + t * per_step) % 2**64
        return f"{base} + np.uint64({offset}) + np.uint64({t}) * np.uint64({per_step})"

    def keep_last(self, indices):
        outs = tuple(replace(o, keep="last") if i in indices else o
                     for i, o in enumerate(self.outs))
        return replace(self, outs=outs)

    def keep_last_map_empty(self, n_steps):
        """A reduce over zero steps has no last row for a map output."""
        return n_steps == 0 and any(o.keep == "last" and not o.taps
                                    for o in self.outs[:self.n_outputs])


def _affine(x, k, minus=None):
    """x + k (- minus): evaluated for ints, source text for names."""
    if _is_int(x) and (minus is None or _is_int(minus)):
        return x + k - (minus or 0)
    text = f"{x} + {k}" if k else f"{x}"
    return f"{text} - {minus}" if minus is not None else text


def _plus(x, k):
    """x + k: evaluated for ints, source text `x + k` for names (`+ 0` kept: the text of
    generated code is part of its on-disk cache key)."""
    return x + k if _is_int(x) else f"{x} + {k}"


def _ring(row, rows):
    return row % rows if _is_int(row) else f"({row}) % {rows}"


def _is_int(x):
    return isinstance(x, numbers.Integral)


def _groups(items, start, sizes):
    groups = []
    for size in sizes:
        groups.append(items[start:start + size])
        start += size
    return groups
