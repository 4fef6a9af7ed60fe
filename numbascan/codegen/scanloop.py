"""Stage: IR -> source, shared by the CPU and CUDA stages — a scan step bound to its buffers.

The loop function of a scan (`codegen/cpu.py`) and its kernels and device functions
(`cuda.py`) run the step program once per time index `t`, with the parameters

    (n_steps[, origin], seq..., buf..., non_seq..., capture..., rng_key, rng_base, ...)

Before the step its inputs are bound (`bind_step`): each sequence tap to the row that step t
reads, each state tap to its buffer row, non_sequences and captures to their parameters, each
random stream's base to its counter for step t; its results are written to their output's row
for step t, by the equation that makes them when it can write there directly. `core/layout.py`
fixes every row. `render_step` renders one step, `render_time_loop` the loop over the steps
with its early exit (ns.until).

Each target passes what only it has: the CPU renderer a `window` function (small states
carried in locals across steps), the outputs it updates `in_place`, and binds the rows of
matmuls it computes before the loop; kernels use none of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.ir import IR, Var
from ..core.layout import Layout


def signature(layout: Layout):
    """Parameter names of a scan's loop function or kernel by role: (seqs, bufs, rest, rng)."""
    seqs = _params(len(layout.seqs), "seq")
    bufs = _params(len(layout.outs), "buf")
    rest = _params(layout.n_nonseqs, "nonseq") + _params(layout.n_captures, "cap")
    rng = [p for j in range(len(layout.rng)) for p in (f"rng_key{j}", f"rng_base{j}")]
    return seqs, bufs, rest, rng


def time_params(layout: Layout):
    """The leading parameters: the number of steps to run, and the origin of a run-time trip."""
    return ["n_steps"] + (["origin"] if layout.trip else [])


def _params(n, prefix):
    return [f"{prefix}{i}" for i in range(n)]


@dataclass
class StepBinding:
    """A step bound to the rows of step `t` (source text)."""
    results: list                                 # the step's outputs
    binds: list = field(default_factory=list)     # (var, expression) bound before the step
    rows: list = field(default_factory=list)      # per layout output: the row it is written to
    seq_rows: dict = field(default_factory=dict)  # sequence tap var id -> (sequence, row)
    windows: list = field(default_factory=list)   # (output index, locals of each window row)


def bind_step(r, step: IR, layout: Layout, seqs, bufs, rest, time="t", window=None,
              in_place=frozenset()) -> StepBinding:
    """Bind the step's inputs to rows of the sequences and buffers at step `time`, name the
    non_sequences, captures and random keys after their parameters, and mark the results
    that their equation writes in place (`r.alias`).

    `window(j, buf, out_layout, tap_vars)`: the locals (one list per window row) that carry
    output j's last L states across steps, or None when they stay in the buffer; a scalar tap
    read from a window needs no bound row. `in_place`: outputs read and written in row 0."""
    b = StepBinding(list(step.outputs))
    seq_taps, state_taps, rest_vars, rng_vars = layout.split_step_inputs(step.inputs)
    origin = "origin" if layout.trip else None
    for sname, sl, tap_vars in zip(seqs, layout.seqs, seq_taps):
        for tap, v in zip(sl.taps, tap_vars):
            row = sl.row(time, tap, layout.go_backwards, f"{sname}.shape[0]", origin)
            b.seq_rows[v.id] = (sname, row)
            b.binds.append((v, f"{sname}[{row}]"))
    for j, (bname, o, tap_vars) in enumerate(zip(bufs, layout.outs, state_taps)):
        carried = window(j, bname, o, tap_vars) if window is not None else None
        if carried is not None:
            b.windows.append((j, carried))
        for tap, v in zip(o.taps, tap_vars):
            if v.shape != () or carried is None:
                b.binds.append((v, f"{bname}[{0 if j in in_place else o.read_row(time, tap)}]"))
    for pname, v in zip(rest, rest_vars):
        r.names[v.id] = pname
    for j in range(len(layout.rng)):
        key, base = rng_vars[2 * j], rng_vars[2 * j + 1]
        r.names[key.id] = f"rng_key{j}"
        b.binds.append((base, layout.rng_base(j, f"rng_base{j}", time)))
    b.rows = [str(0 if j in in_place else o.write_row(time)) for j, o in enumerate(layout.outs)]
    produced = {v.id for e in step.eqns for v in e.outputs}
    for bname, row, v in zip(bufs, b.rows, b.results):
        if (isinstance(v, Var) and v.shape != () and v.id in produced and
                sum(1 for w in b.results if w is v) == 1):
            r.alias[v.id] = f"{bname}[{row}]"
    return b


def render_step(r, out, b: StepBinding, bufs, eqns):
    """One step: bind its rows, run `eqns`, store the results not written in place, move the
    carried windows on, synchronise (`r.barrier`).

    The equations are rendered before the rows are bound: a row that unrolled code reads
    element by element (its elements are locals, `r.elems`) and nothing reads as an array
    needs no view. A renderer with `NAME_ROWS_FIRST` names the bound values first."""
    if r.NAME_ROWS_FIRST:
        for v, _ in b.binds:
            r.name(v)
    start = len(out.lines)
    r.body(out, eqns, b.results)
    step = out.lines[start:]
    del out.lines[start:]
    for v, expr in b.binds:
        if v.id not in r.elems or v.id in r.memory_reads:
            out(f"{r.name(v)} = {expr}")
    out.lines += step
    for bname, row, v in zip(bufs, b.rows, b.results):
        if not (isinstance(v, Var) and v.id in r.aliased):
            r.copy_into(out, bname, row, v, v.shape)
    shift_windows(r, out, b.windows, b.results)
    r.barrier(out)


def render_time_loop(r, out, b: StepBinding, bufs, eqns, until, progress=None):
    """`for t in range(n_steps)` over the step; `n_run` counts the steps run (ns.until: the
    step's last result stops the loop after the step that set it).

    `progress`: the name of an int64 array parameter `[count, every]`. The loop then runs in
    chunks of `every` steps, the loop over a chunk's steps the same as the loop without it,
    and stores the steps run in `count` after each chunk and at the end (a thread of the
    driver reads it while the loop runs without the GIL)."""
    out("n_run = n_steps")
    if progress:
        out(f"progress_every = {progress}[1]")
        out("for progress_t0 in range(0, n_steps, progress_every):")
        out.indent()
        out("progress_t1 = min(progress_t0 + progress_every, n_steps)")
        out("for t in range(progress_t0, progress_t1):")
    else:
        out("for t in range(n_steps):")
    out.indent()
    render_step(r, out, b, bufs, eqns)
    if until:
        out(f"if {r.name(b.results[-1])}:")
        out("    n_run = t + 1")
        out("    break")
    out.dedent()
    if progress:
        if until:
            out("if n_run != n_steps:")
            out("    break")
        out(f"{progress}[0] = progress_t1")
        out.dedent()
        out(f"{progress}[0] = n_run")


def shift_windows(r, out, windows, results):
    """End of a step: every carried window drops its oldest row and takes the new state."""
    new = {}
    for j, window in windows:
        v = results[j]
        new[j] = [f"carry{j}_new_{k}" for k in range(len(window[0]))]
        for name, index in zip(new[j], np.ndindex(*v.shape)):
            out(f"{name} = {r.cast(r.elem(v, index), v.dtype)}")
    for j, window in windows:
        for older, newer in zip(window, window[1:] + [new[j]]):
            for a, b in zip(older, newer):
                out(f"{a} = {b}")
