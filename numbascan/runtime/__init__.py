"""Stage: runtime — what runs traced steps and programs.

The trace and compile caches (`cache.py`), the CPU and CUDA drivers (`cpu.py`, `cuda.py`), the
untraced fallback (`fallback.py`), whole programs (`program.py`), progress bars
(`progress.py`), compile messages (`log.py`), eager linear recurrences (`linrec.py`), and
the process settings for BLAS (`blas.py`) and the allocator (`memory.py`).
"""
