"""Stage: source -> compiled code — write generated modules to the cache folder and import them.

numba's `cache=True` cannot cache functions made by `exec`, so every generated module is a real
file, named by the hash of its source, in `NUMBASCAN_CACHE_DIR` (default: the user's cache
folder). A new process that renders the same program imports the same file and numba loads the
machine code from its own cache next to it. Files are written to a temporary name and renamed,
so concurrent processes never see half a file; a file whose text is not what we would write
(corrupt or stale) is rewritten before import. Within a process one lock covers the check, the
write and the import: threads that ask for the same module together import it once, and none
sees it half executed. numba compiles its functions later, at their first call, outside it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import sys
import tempfile
import threading
import types
from pathlib import Path

import numba

from .._version import __version__

_PACKAGE = "numbascan_generated"      # parent of generated modules in sys.modules
_LOADED: dict[str, object] = {}
_LOCK = threading.Lock()


def cache_dir() -> Path:
    root = os.environ.get("NUMBASCAN_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "numbascan")
    # numba's cache does not key on the optimisation level: keep levels apart
    opt = int(numba.config.OPT)
    path = Path(root) / f"v{__version__}-numba{numba.__version__}-O{opt}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_atomic(path: Path, text: str):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_module(source: str):
    """Import the module with this source (written once per cache folder)."""
    key = hashlib.sha256(source.encode()).hexdigest()[:24]
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        path = cache_dir() / f"ns_{key}.py"
        try:
            current = path.read_text() if path.exists() else None
        except (OSError, UnicodeDecodeError):
            current = None
        if current != source:
            _write_atomic(path, source)
        name = f"{_PACKAGE}.ns_{key}"
        sys.modules.setdefault(_PACKAGE, types.ModuleType(_PACKAGE))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        _scrub_numba_cache(path)       # numba reads its cache at the first call, after this
        _LOADED[key] = module
        return module


def _scrub_numba_cache(path: Path):
    """Delete numba cache files of this module that do not unpickle (corrupt or truncated),
    so numba recompiles instead of failing while it loads them."""
    cache = path.parent / "__pycache__"
    if not cache.is_dir():
        return
    for index in cache.glob(f"{path.stem}.*.nbi"):
        try:
            with open(index, "rb") as f:
                pickle.load(f)
                pickle.loads(f.read())
            for data in cache.glob(index.name[:-4].rsplit(".", 1)[0] + ".*.nbc"):
                pickle.loads(data.read_bytes())
        except Exception:
            for stale in cache.glob(f"{path.stem}.*"):
                try:
                    stale.unlink()
                except OSError:
                    pass
            return
