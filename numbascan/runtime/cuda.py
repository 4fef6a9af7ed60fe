"""Stage: runtime — the CUDA driver: move arrays to the device, launch one kernel, return results.

`scan_cuda` is the CUDA twin of `runtime/cpu.scan_cpu`: the same traced step, layout and buffer
rows, with the buffers allocated on the device and the loop run by one kernel launch
(`codegen.cuda`). NumPy inputs are copied to the device and results copied back; when any
input is already a device array (numba's, or anything with `__cuda_array_interface__`), the
results stay on the device as numba device arrays.

`linear_recurrence` runs the `linrec` primitive on the device by codegen/cuda_linrec.py's block
scan (three launches: the tiles' maps, their prefixes, the tiles' states), for
`ns.linear_recurrence(mode="cuda")`, parallel-in-time scans in mode "cuda" and the `linrec`
equations of programs run on CUDA (`program_impls`).

numba.cuda is imported on first use, so importing numbascan never needs it.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
from numba.core.errors import NumbaPerformanceWarning

from ..codegen.cuda import (Module, SharedMemoryExceeded, THREADS_PER_BLOCK, choose_pattern,
                            render_scan_kernel)
from ..codegen import cuda_linrec
from ..codegen.emit import program_hash
from ..codegen.source import load_module
from ..core.primitives import TABLE
from ..loop.args import ScanArgs, _is_device_array
from ..shared import Shared
from ..trace.tracer import TracingError
from . import cache, cpu as driver

_KERNELS: dict[str, object] = {}


class CudaUnavailable(RuntimeError):
    pass


def _import_numba_cuda():
    from numba import cuda
    return cuda


def cuda_module():
    """numba.cuda, or a clear error saying what is missing: numba-cuda itself, the NVIDIA
    driver, a GPU, or NVVM (the CUDA compiler numba-cuda needs)."""
    try:
        cuda = _import_numba_cuda()
    except ImportError as err:
        raise CudaUnavailable(
            f"mode='cuda' needs numba-cuda, which is not installed ({err}): "
            f"pip install 'numbascan[cuda]'") from err
    if not cuda.is_available():
        raise CudaUnavailable(f"mode='cuda' {_what_is_missing(cuda)}")
    return cuda


SIMULATOR_HINT = "or set NUMBA_ENABLE_CUDASIM=1 to run kernels in numba's CUDA simulator"


def _what_is_missing(cuda):
    """Why numba.cuda is not available, in words: numba-cuda's record of its driver's
    initialisation (`cuda.cuda_error()`: no driver, no device), else its compiler (NVVM)."""
    error = cuda.cuda_error() if hasattr(cuda, "cuda_error") else None
    error = " ".join(str(error).split()) if error else ""
    if error:
        if "cannot be found" in error or "not found" in error:
            return (f"found no NVIDIA driver: numba-cuda is installed, but the CUDA driver "
                    f"library (libcuda) is not on this machine ({error}); install the NVIDIA "
                    f"driver on a machine with an NVIDIA GPU, {SIMULATOR_HINT}")
        if "NO_DEVICE" in error or "no CUDA-capable device" in error:
            return (f"found no GPU: numba-cuda and the NVIDIA driver are installed, but the "
                    f"driver reports no CUDA device ({error}); run on a machine with an "
                    f"NVIDIA GPU (check CUDA_VISIBLE_DEVICES), {SIMULATOR_HINT}")
        return (f"cannot use the GPU: the CUDA driver failed to initialise ({error}); "
                f"{SIMULATOR_HINT}")
    try:
        from numba.cuda.cudadrv import nvvm
        nvvm_ok = nvvm.is_available()
    except Exception:                      # pragma: no cover - other numba-cuda layouts
        nvvm_ok = True
    if not nvvm_ok:
        return ("found no NVVM, the CUDA compiler numba-cuda needs: install numba-cuda with "
                "its CUDA libraries, pip install 'numbascan[cuda]' (numba-cuda[cu12])")
    return (f"found no usable GPU (numba.cuda.is_available() is False); run on a machine "
            f"with an NVIDIA GPU and its driver, {SIMULATOR_HINT}")


def compile_kernel(step, layout, pattern):
    """The kernel for this step, layout and pattern; `kernel.pattern` is the pattern it was
    rendered with (one thread per step when the temporaries overflow shared memory)."""
    key = program_hash(step.fingerprint(), layout, pattern)
    kernel = _KERNELS.get(key)
    if kernel is None:
        module = Module()
        try:
            name = render_scan_kernel(module, step, layout, pattern)
        except SharedMemoryExceeded as err:
            # documented fallback: one thread per step, its temporaries in local memory
            unit = "batch element" if pattern.kind == "batched" else "scan"
            warnings.warn(f"{err}: it runs in one thread per {unit}, its temporaries in local "
                          f"memory, which is slow; mode='cpu' may be faster",
                          NumbaPerformanceWarning, stacklevel=4)
            module = Module()
            pattern = replace(pattern, lanes=1)
            name = render_scan_kernel(module, step, layout, pattern)
        kernel = getattr(load_module(module.source(f"cuda kernel {name}")), name)
        kernel.pattern = pattern
        _KERNELS[key] = kernel
    return kernel


def kernel_source(step, layout, pattern) -> str:
    module = Module()
    name = render_scan_kernel(module, step, layout, pattern)
    return module.source(f"cuda kernel {name}")


def launch_config(pattern, n_steps):
    """(blocks, threads) for a kernel of this pattern."""
    if pattern.kind == "elementwise":
        return max(1, -(-pattern.size // THREADS_PER_BLOCK)), THREADS_PER_BLOCK
    if pattern.kind == "batched":
        if pattern.lanes > 1:
            return max(1, n_steps), pattern.lanes
        return max(1, -(-n_steps // THREADS_PER_BLOCK)), THREADS_PER_BLOCK
    return 1, pattern.lanes


def to_device(cuda, x):
    """A device array for `x`: device arrays as they are, host values copied."""
    if isinstance(x, Shared):
        x = x.get_value(borrow=True)
    if _is_device_array(x):
        return x if hasattr(x, "copy_to_host") else cuda.as_cuda_array(x)
    arr = np.asarray(x)
    if arr.ndim == 0:                     # a scalar argument (ascontiguousarray makes it 1-d)
        return arr[()]
    return cuda.to_device(np.ascontiguousarray(arr))


def _copy_rows(cuda, dst, init, shape):
    """dst (a device buffer's leading rows) = init (host or device) reshaped to `shape`."""
    if _is_device_array(init):
        src = to_device(cuda, init)
        if tuple(src.shape) != tuple(shape):
            src = src.reshape(shape)
        dst.copy_to_device(src)
    else:
        dst.copy_to_device(np.ascontiguousarray(np.asarray(init, dtype=dst.dtype).reshape(shape)))


def _device_hooks(cuda):
    """`cpu.layout_buffers`'s allocation and initial-state hooks, on the device."""
    return dict(empty=cuda.device_array,
                write_rows=lambda rows, init, shape: _copy_rows(cuda, rows, init, shape))


def state_buffers(cuda, ts, sa, n):
    """`cpu.state_buffers` on the device."""
    return driver.state_buffers(ts, sa, n, **_device_hooks(cuda))


def _row(buf, k):
    """Row k of a device buffer, as a device array (of one element for a 1-d buffer)."""
    view = buf[k:k + 1]
    return view.reshape(view.shape[1:]) if len(view.shape) > 1 else view


def _row_or_scalar(buf, k):
    """Row k of a device buffer: a host scalar for a 1-d buffer, else a device array."""
    return _row(buf, k) if len(buf.shape) > 1 else buf[k:k + 1].copy_to_host()[0]


def _to_host(x, shape):
    return x.copy_to_host().reshape(shape)


def results(ts, bufs, n_run, on_host):
    """`cpu.results` from device buffers: outputs copied to the host when `on_host`, the
    new values of shared variables always."""
    return driver.results(ts, bufs, n_run, read_row=_row,
                          output=_to_host if on_host else driver._as_is, update=_to_host)


def scan_cuda(sa: ScanArgs, batched=False):
    """Run an eager scan as one kernel launch; -> (outputs, updates, n_run)."""
    cuda = cuda_module()
    try:
        ts, _, captures = cache.traced_scan(sa, compile=False)
    except TracingError as err:
        err.add_context("mode='cuda' (kernels are made from traced steps only)")
        raise
    n = sa.n_steps
    if ts.layout.keep_last_map_empty(n):
        raise ValueError("reduce/foldl with n_steps=0 has no last step for a map output")
    pattern = choose_pattern(ts.ir, ts.layout, batched=batched)
    kernel = compile_kernel(ts.ir, ts.layout, pattern)
    inputs = list(sa.seqs) + [i for i in sa.inits if i is not None] + list(sa.nonseqs)
    on_host = not any(_is_device_array(x) for x in inputs)
    bufs = state_buffers(cuda, ts, sa, n)
    n_run_out = cuda.device_array(1, np.int64)
    args = driver.call_arguments(ts, sa, bufs, captures, lambda x: to_device(cuda, x))
    if n > 0:
        blocks, threads = launch_config(kernel.pattern, n)
        kernel[blocks, threads](n, *args, n_run_out)
        n_run = int(n_run_out.copy_to_host()[0]) if ts.layout.until else n
    else:
        n_run = 0
    driver.advance_streams(ts, n_run)
    return (*results(ts, bufs, n_run, on_host), n_run)


def scan_equation(*args, step, layout, n_steps, **_):
    """A scan equation of a traced program, run as one kernel (its inputs in the order of
    `loop/primitive.py`); its outputs stay on the device for the next scan that reads them."""
    cuda = cuda_module()
    seqs, inits, rest, rng, dynamic = layout.split_inputs(args)
    n_run = n = max(0, min(n_steps, int(dynamic[0]))) if dynamic else n_steps
    origin = [int(dynamic[1])] if dynamic else []
    pattern = choose_pattern(step, layout, batched=layout.parallel)
    kernel = compile_kernel(step, layout, pattern)
    bufs = driver.layout_buffers(layout, [(v.dtype, v.shape) for v in step.outputs], inits,
                                 n_steps, **_device_hooks(cuda))
    n_run_out = cuda.device_array(1, np.int64)
    call = ([to_device(cuda, s) for s in seqs] + bufs + [to_device(cuda, r) for r in rest] +
            [np.uint64(r) for r in rng])
    if n > 0:
        blocks, threads = launch_config(kernel.pattern, n)
        kernel[blocks, threads](n, *origin, *call, n_run_out)
        if layout.until:
            n_run = int(n_run_out.copy_to_host()[0])
    outs = driver.layout_values(layout, bufs, n_run, n_steps, read_row=_row_or_scalar)
    if layout.counts_steps:
        outs.append(np.int64(n_run))
    return tuple(outs)


def _on_host(impl):
    def run(*args, **params):
        return impl(*[a.copy_to_host() if _is_device_array(a) else a for a in args], **params)
    return run


class _HostImpls(dict):
    """Primitive implementations for a program whose scans run on CUDA: scans launch kernels,
    linear recurrences run the block scan (their states stay on the device), every other
    primitive gets its device-array inputs copied to the host first."""
    def get(self, prim, default=None):
        if prim == "scan":
            return scan_equation
        if prim == "linrec":
            return linrec_equation
        return _on_host(TABLE[prim].impl)


def program_impls():
    return _HostImpls()


def to_host(x):
    return x.copy_to_host() if _is_device_array(x) else x


# ------------------------------------------------------------------------------------------------
# linear recurrences: codegen/cuda_linrec.py's block scan

_LINREC_MODULES: dict = {}


class RecurrenceTooLarge(ValueError):
    pass


def _linrec_module(N, dtype):
    key = (N, np.dtype(dtype).name)
    module = _LINREC_MODULES.get(key)
    if module is None:
        module = load_module(cuda_linrec.module_source(N, dtype))
        _LINREC_MODULES[key] = module
    return module


def _device_operand(cuda, x, dtype, shape):
    """`x` (host or device) as a C-contiguous device array of `dtype` in `shape`."""
    if _is_device_array(x):
        x = x if hasattr(x, "copy_to_host") else cuda.as_cuda_array(x)
        if x.dtype == dtype and x.is_c_contiguous():
            return x.reshape(shape)
        x = x.copy_to_host()
    return cuda.to_device(np.ascontiguousarray(x, dtype).reshape(shape))


def linear_recurrence(a, b, x0, kind, reverse, invariant, *, threads=None, items=None):
    """The states of a linear recurrence (the `linrec` primitive's operands and parameters)
    as a device array of b's shape, solved by the block scan. `threads`, `items`: the launch
    (codegen/cuda_linrec.py's `launch_shape`; tests use small ones)."""
    cuda = cuda_module()
    dtype = np.dtype(b.dtype)
    shape = tuple(b.shape)
    T = shape[0]
    m = int(np.prod(shape[1:], dtype=np.int64))
    groups, N = (m, 1) if kind == "diagonal" else (1, m)
    if not cuda_linrec.fits(N, dtype):
        raise RecurrenceTooLarge(
            f"linear_recurrence: mode 'cuda' solves matrix recurrences whose map (an n x n "
            f"matrix and an n-vector of {dtype}) fits in {cuda_linrec.SHARED_BYTES} bytes of "
            f"shared memory; found n = {N}: use mode 'cpu'")
    out = cuda.device_array((T, groups, N), dtype)
    if T == 0 or m == 0:
        return out.reshape(shape)
    Ta = 1 if invariant else T
    a_dev = _device_operand(cuda, a, dtype, (Ta, groups, N, N))
    b_dev = _device_operand(cuda, b, dtype, (T, groups, N))
    x0_dev = _device_operand(cuda, x0, dtype, (groups, N))
    module = _linrec_module(N, dtype)
    used, items, tiles = cuda_linrec.launch_shape(T, N, dtype, threads, items)
    rev = bool(reverse)
    if tiles == 1:
        carry = x0_dev.reshape((groups, 1, N))
    else:
        tile_a = cuda.device_array((groups, tiles, N, N), dtype)
        tile_b = cuda.device_array((groups, tiles, N), dtype)
        carry = cuda.device_array((groups, tiles, N), dtype)
        module.tile_totals[groups * tiles, used](a_dev, b_dev, rev, items, tile_a, tile_b)
        module.tile_carries[groups, min(used, tiles)](tile_a, tile_b, x0_dev, carry)
    module.tile_states[groups * tiles, used](a_dev, b_dev, rev, items, carry, out)
    return out.reshape(shape)


def linrec_equation(a, b, x0, *, kind, reverse, invariant, mode=None):
    """A `linrec` equation of a traced program, on the device."""
    return linear_recurrence(a, b, x0, kind, reverse, invariant)
