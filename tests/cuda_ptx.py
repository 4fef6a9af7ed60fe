"""Compile the CUDA kernels of representative scans to PTX, without a GPU.

numba's CUDA simulator runs kernels as Python, so it accepts code that the real CUDA target
rejects (NumPy functions numba.cuda cannot call on scalars, untyped constructs, ...). This
script renders the kernel of each scan below exactly as `mode="cuda"` would, types its
arguments as the driver passes them, and compiles it to PTX for compute capability 8.0 with
NVVM, then assembles the PTX with ptxas when it is found (the nvidia-cuda-nvcc wheel provides
both; no driver or GPU is needed).

Run it in a process without NUMBA_ENABLE_CUDASIM:

    env -u NUMBA_ENABLE_CUDASIM python tests/cuda_ptx.py [case ...]

It prints one line per case, `ok <case> <pattern> lanes=<n> ptx=<bytes> <ptxas resource
usage>` or `FAIL <case>: <error>` (CUDA_PTX_VERBOSE=1 adds the traceback), then
`summary: <n> ok, <m> failed`, and exits with status 1 if any case failed. When NVVM cannot be
loaded it prints a line starting with `NVVM-UNAVAILABLE` and exits with status 0.
test_cuda.py runs it (test_kernels_compile_to_ptx) and imports its step functions.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings

import numpy as np
from scipy.special import erf, expit, logsumexp

import numbascan as ns

UNAVAILABLE = "NVVM-UNAVAILABLE"
CC = (8, 0)


def _setup():
    """numba.cuda for PTX compilation, or exit with a marker when NVVM is missing."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("cuda_ptx.py must run without NUMBA_ENABLE_CUDASIM (the simulator compiles "
              "nothing)")
        sys.exit(2)
    try:
        from numba import cuda
        import numba.cuda.dispatcher as dispatcher
        from numba.cuda.cudadrv import nvvm
        nvvm.NVVM()
    except Exception as err:
        print(f"{UNAVAILABLE}: {type(err).__name__}: {err}")
        sys.exit(0)

    class _Device:
        # device functions called from a kernel look up the current device's compute
        # capability; without a GPU there is none
        compute_capability = CC

    dispatcher.get_current_device = lambda: _Device()
    try:
        cuda.compile_ptx(lambda a: None, "void(float64[:])", cc=CC)
    except Exception as err:
        if "nvvm" not in f"{type(err).__name__} {err}".lower():
            raise                      # not a missing library: a failure to report
        print(f"{UNAVAILABLE}: {type(err).__name__}: {err}")
        sys.exit(0)
    return cuda


# -- steps (test_cuda.py runs them in the simulator too) --------------------------------------

def logistic(s, x, a):
    return a * x * (1 - x) + s


def elementwise_ops(s, x, d):
    y = np.exp(-np.abs(x)) + np.log1p(x * x) + np.sqrt(np.abs(s)) + np.sin(x) * np.cos(s)
    y = y + np.arctan2(x, s + 1.0) + np.arcsinh(s) + np.tan(s) + np.expm1(s) + np.log(x + 1)
    y = y + np.sign(s - 0.5) + np.floor(x * 3.0) - np.ceil(s) + np.square(s) + x ** 2
    y = y + s // d + np.remainder(s, d) + np.floor_divide(-s, d) + s % -d
    y = y + np.where(np.logical_and(x > 0.5, s < 0.5), x, s) + np.clip(x, 0.2, 0.8)
    y = y + np.logical_xor(x > 0.3, s > 0.3) + np.logical_not(s - 0.5) + ~(x > 0.7)
    y = y + expit(x) + erf(s) + np.tanh(x) + np.cosh(s) + np.arctan(x) + np.reciprocal(x + 1)
    return 0.5 * x + 0.01 * y, np.maximum(x, s), np.minimum(x, s), np.isnan(s)


def rnn(x, h, W, U, b):
    return np.tanh(h @ W + x @ U + b)


def rnn_with_sum(x, h, W, U, b):
    h2 = np.tanh(h @ W + x @ U + b)
    return h2, h2.sum()


def rnn_until(x, h, W, U, b, threshold):
    h2 = np.tanh(h @ W + x @ U + b)
    return h2, ns.until(h2.sum() > threshold)


def reductions(x, M):
    M2 = np.tanh(0.9 * M + 0.1 * x[:, None])
    s = np.sum(M2, axis=0)
    return (M2 - 0.01 * M2.max(), s, np.argmax(s), np.argmin(M2, axis=0), M2.min() + M2.mean(),
            np.max(M2, axis=1, keepdims=True), np.cumsum(s), M2.T @ x)


def structural(x, i, M, A):
    y = M.T @ M[:, :3]
    z = np.concatenate([M[:2], np.expand_dims(M[0] * 2, 0), M[3:]], axis=0)
    w = np.stack([z[0], z[1]]).reshape(-1)[:M.shape[1]] + np.broadcast_to(x[:1], (M.shape[1],))
    q = np.prod(np.tanh(M), axis=0, keepdims=True) + np.mean(M, axis=1, keepdims=True)[:1]
    r = np.where(np.all(M > -5, axis=0) & np.any(M > 0, axis=0), 1.0, 0.5)
    t = np.tensordot(A, M, axes=1)[0, 0] + np.outer(x, x)[0, 1] + np.inner(x, x)
    g = M[i] + A[:, i] + M[i, 1]
    k = np.argmin(M, axis=0) + np.argmax(M, axis=1)[0]
    e = logsumexp(M, axis=0)
    out = (0.5 * M + 0.01 * q + 0.1 * r + 0.001 * t + 0.01 * g + 0.01 * w + 0.001 * k
           + 0.01 * y.sum(axis=1)[:4, None] + np.eye(4, M.shape[1]) * 0.01 + 0.01 * e
           + np.arange(M.shape[1]) * 0.001 + np.full((4, M.shape[1]), 0.002))
    return np.clip(out, -3, 3), np.squeeze(out[:1, :1]).astype(np.float32)


def nested(x, h, W, v):
    inner, _ = ns.foldl(lambda c, acc: 0.5 * acc + c, sequences=v[:3], outputs_info=h)
    ys, _ = ns.scan(lambda r, acc: 0.5 * acc + r, sequences=W[:2], outputs_info=h)
    return np.tanh(0.5 * (h @ W) + 0.1 * inner + 0.1 * ys.sum(axis=0) + x.sum())


def _outer_step(c, acc):
    P = np.outer(acc, acc)
    return 0.5 * acc + P.T[0] * c


def nested_outer(x, h):
    """With h of 40 values: two (40, 40) temporaries here and two in the nested scan's step,
    50 KB together: more shared memory than a block has (the kernel runs in one thread)."""
    out, _ = ns.foldl(_outer_step, sequences=x, outputs_info=h)
    M = np.outer(out, h)
    return np.tanh(out + M.T[1] * 0.01)


def seed_taps(x2, x1, U, V, W, b):
    """The seed's recurrence x(t) = x(t-2) U + x(t-1) V + tanh(x(t-1) W + b)."""
    return x2 @ U + x1 @ V + np.tanh(x1 @ W + b)


def batched_rnn(h0, xs, W):
    """A function of one batch element for ns.vmap: an RNN over its sequence."""
    hs, _ = ns.scan(lambda x, h, W: np.tanh(h @ W + x), sequences=xs, outputs_info=h0,
                    non_sequences=W)
    return hs, hs.sum()


def batched_foldl(x0, s):
    return ns.foldl(lambda si, acc: 0.5 * acc + np.sin(si), sequences=s, outputs_info=x0)[0]


# -- the cases ---------------------------------------------------------------------------------
# Each gives scan arguments: fn, sequences, outputs_info, non_sequences, n_steps,
# go_backwards, keep_last (reduce/foldl/foldr), batched (ns.vmap's map), and the pattern
# expected ("elementwise"; "block+": block with lanes > 1; "block1": lanes == 1; "batched").

def _cases():
    rng = np.random.default_rng(20240611)
    S, H, T = 64, 40, 5
    x0 = rng.random(S)
    seq = rng.random((T, S)) * 0.1
    W = rng.standard_normal((H, H)) * 0.3
    U = rng.standard_normal((3, H))
    b = rng.standard_normal(H)
    X = rng.standard_normal((T, 3))
    h0 = rng.standard_normal(H)
    streams = ns.RandomStreams(7)

    def random_elementwise(s, x):
        return (0.5 * x + s * streams.normal(size=(S,)) + streams.uniform(size=(S,), low=-1.0)
                + streams.binomial(size=(S,), n=3, p=0.3))

    def random_block(x, h, W):
        return np.tanh(0.5 * (h @ W) + streams.normal(size=(H,)) + x.sum()) * \
            streams.binomial(size=(H,), p=0.7) + streams.uniform()

    def nested_random(x, h, W):
        inner, _ = ns.scan(lambda acc: 0.5 * acc + streams.normal(size=(H,)), outputs_info=h,
                           n_steps=2)
        return np.tanh(h @ W + inner[-1] + x.sum()), streams.uniform(size=(2,))

    def f32(s, x, a):
        return np.tanh(a * x) * np.float32(0.9) + np.exp(s) * np.float32(0.01)

    def rnn_f32(x, h, W):
        return np.tanh(h @ W + x.sum()) + np.maximum(h, np.float32(0.0)).max()

    def map_step(s, a):
        return np.exp(s) * a + np.tanh(s)

    def int_state(x, k):
        return k + (x > 0.05).astype(np.int64) * 3 - k // 2 + k % 3

    def shared_step(s, x):
        return 0.5 * x + s + k, {k: k + x}

    k = ns.shared(rng.random(S), name="k")
    M0 = rng.standard_normal((6, 8))
    Ut, Vt, Wt = (rng.standard_normal((2, 2)) * 0.5 for _ in range(3))
    a32 = rng.random(S).astype(np.float32)

    def case(fn, sequences=None, outputs_info=None, non_sequences=None, n_steps=None,
             go_backwards=False, keep_last=False, batched=False, expect=None):
        return dict(fn=fn, sequences=sequences, outputs_info=outputs_info,
                    non_sequences=non_sequences, n_steps=n_steps, go_backwards=go_backwards,
                    keep_last=keep_last, batched=batched, expect=expect)

    return {
        "elementwise": case(logistic, seq, x0, rng.random(S) + 2.5, expect="elementwise"),
        "elementwise_scalar_nonseq": case(logistic, seq, x0, 2.7, expect="elementwise"),
        "elementwise_foldl": case(logistic, seq, x0, rng.random(S), keep_last=True,
                                  expect="elementwise"),
        "elementwise_ufuncs": case(elementwise_ops, seq, [x0, None, None, None],
                                  rng.random(S) + 0.05, expect="elementwise"),
        "elementwise_taps": case(lambda s1, s0, x2, x1: 0.5 * x2 + 0.4 * x1 + s1 - s0,
                                 dict(input=seq, taps=[-1, 0]),
                                 dict(initial=rng.random((2, S)), taps=[-2, -1]),
                                 expect="elementwise"),
        "elementwise_map_beside": case(lambda s, x: (0.9 * x + s, np.exp(x)), seq, [x0, None],
                                       expect="elementwise"),
        "elementwise_float32": case(f32, seq.astype(np.float32), x0.astype(np.float32), a32,
                                    expect="elementwise"),
        "elementwise_int_state": case(int_state, seq, rng.integers(0, 9, S), expect="elementwise"),
        "elementwise_random": case(random_elementwise, seq, x0, expect="elementwise"),
        "elementwise_shared": case(shared_step, seq, x0, expect="elementwise"),
        "map": case(map_step, seq, None, rng.random(S), expect="elementwise"),
        "block_rnn": case(rnn, X, h0, [W, U, b], expect="block+"),
        "block_go_backwards": case(rnn, X, h0, [W, U, b], go_backwards=True, expect="block+"),
        "block_foldl": case(rnn, X, h0, [W, U, b], keep_last=True, expect="block+"),
        "block_reductions": case(reductions, rng.standard_normal((T, 6)), [M0] + [None] * 7,
                                 expect="block+"),
        "block_structural": case(structural, [X, rng.integers(0, 4, T)],
                                 [rng.standard_normal((4, 6)), None],
                                 [rng.standard_normal((6, 4))], expect="block+"),
        "block_until": case(rnn_until, X, h0, [W, U, b, 1.0], expect="block+"),
        "block_nested_scan": case(nested, X, h0, [W, rng.standard_normal(H)], expect="block+"),
        "block_nested_random": case(nested_random, X, [h0, None], [W], expect="block+"),
        "block_shared_memory_overflow": case(nested_outer, X[:, :2], h0, expect="block+"),
        "block_random": case(random_block, X, h0, [W], expect="block+"),
        "block_float32": case(rnn_f32, X.astype(np.float32), h0.astype(np.float32),
                              [W.astype(np.float32)], expect="block+"),
        "block1_taps_seed": case(seed_taps, None,
                                 dict(initial=rng.standard_normal((2, 2)), taps=[-2, -1]),
                                 [Ut, Vt, Wt, rng.standard_normal(2)], n_steps=20,
                                 expect="block1"),
        "block1_reductions": case(lambda x, h: (np.tanh(h * 0.5 + x).max() + h * 0.1,
                                                np.argmin(h)),
                                  rng.standard_normal((T, 3)), [rng.standard_normal(3), None],
                                  expect="block1"),
        "batched_map": case(map_step, seq, None, rng.random(S), batched=True, expect="batched"),
        "batched_nested_scan": case(batched_rnn, [rng.standard_normal((3, H)),
                                                  rng.standard_normal((3, T, H))], None, [W],
                                    batched=True, expect="batched"),
        "batched_nested_foldl": case(batched_foldl, [rng.random((3, 3)), rng.random((3, T, 3))],
                                     batched=True, expect="batched"),
        "batched_map_block": case(lambda x, W: np.tanh(W @ x), rng.standard_normal((T, H)),
                                  None, [W], batched=True, expect="batched"),
    }


def _arguments(ts, sa, captures):
    """The kernel's arguments, typed as `runtime.cuda.scan_cuda` passes them (host stand-ins)."""
    from numbascan.runtime.cpu import as_argument, state_buffers

    args = [sa.n_steps]
    args += [as_argument(s) for s in sa.seqs]
    args += state_buffers(ts, sa, sa.n_steps)
    args += [as_argument(v) for v in sa.nonseqs]
    args += [as_argument(c) for c in captures]
    for s in ts.streams:
        args += [np.uint64(s.key), np.uint64(s.counter % 2**64)]
    args.append(np.zeros(1, np.int64))
    return args


def compile_case(cuda, c):
    """-> (pattern, PTX text, notes) of one case's kernel."""
    import numba
    from numbascan.loop import args as api
    from numbascan.runtime import cuda as gpu
    from numbascan.codegen.cuda import choose_pattern
    from numbascan.runtime.cache import traced_scan

    sa = api.normalize(c["fn"], c["sequences"], c["outputs_info"], c["non_sequences"],
                       c["n_steps"], -1, c["go_backwards"], None, False, False, None,
                       keep_last=c["keep_last"], parallel=c["batched"])   # as ns.vmap's map
    ts, _, captures = traced_scan(sa, compile=False)
    pattern = choose_pattern(ts.ir, ts.layout, batched=c["batched"])
    expect = c["expect"]
    got = pattern.kind if pattern.kind != "block" else \
        ("block+" if pattern.lanes > 1 else "block1")
    if expect is not None and got != expect:
        raise AssertionError(f"pattern {pattern} is not the expected {expect!r}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernel = gpu.compile_kernel(ts.ir, ts.layout, pattern)
    notes = " ".join(f"[{w.category.__name__}: {str(w.message)[:60]}...]" for w in caught)
    sig = tuple(numba.typeof(a) for a in _arguments(ts, sa, captures))
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=CC)
    return pattern, ptx, notes


# the block scan of linear recurrences (codegen/cuda_linrec.py): one module per (N, dtype)
LINREC = {"linrec_diagonal_f64": (1, np.float64), "linrec_diagonal_f32": (1, np.float32),
          "linrec_matrix4_f64": (4, np.float64), "linrec_matrix8_f32": (8, np.float32)}


def compile_linrec(cuda, N, dtype):
    """-> [(kernel name, PTX text)] of the block scan's kernels, typed as
    `runtime.cuda.linear_recurrence` launches them."""
    import numba
    from numbascan.codegen import cuda_linrec
    from numbascan.codegen.source import load_module

    module = load_module(cuda_linrec.module_source(N, dtype))
    ty = numba.from_dtype(np.dtype(dtype))
    a4, a3, a2 = ty[:, :, :, ::1], ty[:, :, ::1], ty[:, ::1]
    sigs = {"tile_totals": (a4, a3, numba.boolean, numba.int64, a4, a3),
            "tile_carries": (a4, a3, a2, a3),
            "tile_states": (a4, a3, numba.boolean, numba.int64, a3, a3)}
    return [(k, cuda.compile_ptx(getattr(module, k).py_func, sig, cc=CC)[0])
            for k, sig in sigs.items()]


def find_ptxas():
    """The PTX assembler of the nvidia-cuda-nvcc wheel (or of a CUDA toolkit), or None."""
    try:
        import nvidia.cuda_nvcc
        for base in nvidia.cuda_nvcc.__path__:
            path = os.path.join(base, "bin", "ptxas")
            if os.access(path, os.X_OK):
                return path
    except ImportError:
        pass
    return shutil.which("ptxas")


def assemble(ptxas, ptx):
    """Assemble PTX for the target GPU: ptxas rejects what PTX allows but no GPU runs (more
    than 48 KB of static shared memory per block, ...). -> resource usage line."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, f"-arch=sm_{CC[0]}{CC[1]}", "-v", src, "-o",
                               os.path.join(tmp, "kernel.cubin")],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        raise RuntimeError("ptxas: " + " | ".join(errors or proc.stderr.splitlines()[-3:]))
    used = [line for line in proc.stderr.splitlines() if "Used" in line and "registers" in line]
    return used[-1].split(":", 1)[-1].strip() if used else ""


def main(names):
    cuda = _setup()
    cases = _cases()
    unknown = [n for n in names if n not in cases and n not in LINREC]
    if unknown:
        print(f"unknown cases {unknown}; known: {sorted(cases)}")
        return 2
    ptxas = find_ptxas()
    print(f"ptxas: {ptxas}" if ptxas else "ptxas: not found, PTX is not assembled")
    def scan_lines(name):
        pattern, ptx, notes = compile_case(cuda, cases[name])
        usage = assemble(ptxas, ptx) if ptxas else ""
        return [f"ok {name} {pattern.kind} lanes={pattern.lanes} ptx={len(ptx)} {usage} "
                f"{notes}".rstrip()]

    def linrec_lines(name):
        kernels = compile_linrec(cuda, *LINREC[name])
        return [f"ok {name} {kernel} ptx={len(ptx)} {assemble(ptxas, ptx) if ptxas else ''}"
                .rstrip() for kernel, ptx in kernels]

    jobs = [(n, scan_lines) for n in names or list(cases) if n in cases]
    jobs += [(n, linrec_lines) for n in names or list(LINREC) if n in LINREC]
    failed = 0
    for name, lines in jobs:
        try:
            report = lines(name)
        except Exception as err:
            failed += 1
            first = str(err).strip().splitlines()
            report = [f"FAIL {name}: {type(err).__name__}: {' | '.join(first[:6])}"]
            if os.environ.get("CUDA_PTX_VERBOSE"):
                report.append(traceback.format_exc())
        print("\n".join(report))
        sys.stdout.flush()
    total = len(names) if names else len(cases) + len(LINREC)
    print(f"summary: {total - failed} ok, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
