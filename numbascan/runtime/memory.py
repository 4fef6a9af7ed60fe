"""Runtime setting: let the C allocator keep freed memory for reuse.

Compiled scans allocate their outputs, tapes and temporaries at every call. glibc hands large
blocks back to the operating system when they are freed, so the next call touches fresh pages
and pays a page fault per 4 kB — on a virtual machine this was up to half the time of a reverse-mode
call. numbascan raises glibc's mmap and trim thresholds once, at import, so freed blocks are
reused. Set NUMBASCAN_KEEP_ALLOCATOR=1 to leave the allocator's settings alone.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 256 << 20          # blocks up to 256 MiB come from (and return to) the heap


def keep_freed_memory():
    if os.environ.get("NUMBASCAN_KEEP_ALLOCATOR") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):              # not glibc
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, 2 * THRESHOLD))
