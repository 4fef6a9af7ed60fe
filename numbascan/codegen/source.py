"""Stage: source -> compiled code — write generated modules to the cache folder and import them.

numba's `cache=True` cannot cache functions made by `exec`, so every generated module is a real
file, named by the hash of its source, in `NUMBASCAN_CACHE_DIR` (default: the user's cache
folder). A new process that renders the same program imports the same file and numba loads the
machine code from its own cache next to it. Files are written to a temporary name and renamed,
so concurrent processes never see half a file; a file whose text is not what we would write
(corrupt or stale) is rewritten before import.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path

import numba

from .. import __version__

_LOADED: dict[str, object] = {}
_LOCK = threading.Lock()


def cache_dir() -> Path:
    root = os.environ.get("NUMBASCAN_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "numbascan")
    path = Path(root) / f"v{__version__}-numba{numba.__version__}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_atomic(path: Path, text: str):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


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
        name = f"numbascan_generated.ns_{key}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _LOADED[key] = module
        return module
