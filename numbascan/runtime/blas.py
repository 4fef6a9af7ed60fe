"""Stage: runtime — generated code calls BLAS on one thread.

A generated loop that calls BLAS (`np.dot`, numba's route to SciPy's OpenBLAS) does so once per
step, on small matrices, one call after the other. OpenBLAS shares each call among its threads,
and its threads spin while they wait for the next call, on the cores the loop itself runs on:
on a 2-core machine the W1 benchmark ran 3.7 times slower. So while compiled code that uses
BLAS runs, numbascan asks OpenBLAS to use one thread for the calling thread only
(`openblas_set_num_threads_local`, OpenBLAS 0.3.27 and later) and restores the previous value
afterwards; the rest of the program is not affected.

`NUMBASCAN_BLAS_THREADS=n` asks for n threads instead; `0` leaves BLAS as it is. Where SciPy's
BLAS is not an OpenBLAS with that function (MKL, an older OpenBLAS), nothing changes.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

_UNSET = object()
_SET_LOCAL = _UNSET


def _set_threads_local():
    """`openblas_set_num_threads_local` of the OpenBLAS SciPy loaded, or None."""
    global _SET_LOCAL
    if _SET_LOCAL is _UNSET:
        scipy = sys.modules.get("scipy")        # numba imports it to call BLAS
        if scipy is None:                       # not yet: compiled code loads it
            return None
        found = None               # assigned once, complete: other threads read it unlocked
        root = os.path.dirname(os.path.dirname(scipy.__file__))
        for path in sorted(glob.glob(os.path.join(root, "scipy.libs", "*openblas*"))):
            try:
                fn = ctypes.CDLL(path).openblas_set_num_threads_local
            except (OSError, AttributeError):
                continue
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            found = fn
            break
        _SET_LOCAL = found
    return _SET_LOCAL


def threads():
    return int(os.environ.get("NUMBASCAN_BLAS_THREADS", "1"))


class BlasOnOneThread:
    """A compiled function whose BLAS calls run on the calling thread (see the docstring)."""

    def __init__(self, fn):
        self.fn = fn
        self.py_func = fn.py_func

    def __call__(self, *args):
        n = threads()
        set_local = _set_threads_local() if n > 0 else None
        if set_local is None:
            return self.fn(*args)
        previous = set_local(n)
        try:
            return self.fn(*args)
        finally:
            set_local(previous)


def for_code(fn, calls_blas: bool):
    """`fn` itself, or wrapped when its generated code calls BLAS (`Module.uses_blas`, which
    the renderer records where it writes a BLAS call)."""
    return BlasOnOneThread(fn) if calls_blas else fn
