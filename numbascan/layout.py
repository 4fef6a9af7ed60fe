"""Stage: layout — the roles and taps of a scan, and the step index arithmetic they imply.

A `Layout` is everything about a scan except its step program and array values: it is part
of the compiled code's cache key. The step program's inputs come in this order:

    [taps of every sequence] [taps of every fed-back output, then of every updated shared]
    [non_sequences] [captures] [(key, base) of every random stream]

and its outputs are [fn's outputs] [new values of the updated shared] [until condition].

Buffer layout of a fed-back output with `L = max(-taps)`:
    keep="all":  buf[L + t] holds out[t]; buf[:L] holds the initial states (out[-L:]).
    keep="last": a ring of R = L + 1 rows, out[t] at buf[(L + t) % R].
A map output (no taps) uses buf[t] (keep="all") or buf[0] (keep="last").
Sequence `s` with taps read at step t:  s[t + m + tap] (forwards) or
s[len(s) - 1 - (t + m + tap)] (go_backwards), m = max(0, -min(taps)).
"""

from __future__ import annotations

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

    def rows(self, seq, t, go_backwards):
        """The rows of `seq` that step t reads, one per tap (reference loops)."""
        rows = [t + self.m + tap for tap in self.taps]
        return [seq[len(seq) - 1 - j] if go_backwards else seq[j] for j in rows]


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

    @property
    def n_seq_args(self):
        return sum(len(s.taps) for s in self.seqs)

    @property
    def n_state_args(self):
        return sum(len(o.taps) for o in self.outs)

    def keep_last(self, indices):
        outs = tuple(replace(o, keep="last") if i in indices else o
                     for i, o in enumerate(self.outs))
        return replace(self, outs=outs)

    def keep_last_map_empty(self, n_steps):
        """A reduce over zero steps has no last row for a map output."""
        return n_steps == 0 and any(o.keep == "last" and not o.taps
                                    for o in self.outs[:self.n_outputs])
