"""Stage: IR -> source.

The text of a generated module (`emit.py`), equations as loop nests (`loopnest.py`), a scan's
step bound to its buffers and its time loop (`scanloop.py`), all three shared by the CPU
renderer (`cpu.py`: loop functions of scans, whole programs) and the CUDA renderer (`cuda.py`);
the math generated code calls (`fastmath.py`, `shortmath.py`); the loading of generated modules
(`source.py`).
"""
