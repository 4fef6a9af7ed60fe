"""Stage: source -> compiled code — write generated modules to the cache folder and import them.

numba's `cache=True` cannot cache functions made by `exec`, so every generated module is a real
file, named by the hash of its source, in `NUMBASCAN_CACHE_DIR` (default: the user's cache
folder). A new process that renders the same program imports the same file and numba loads the
machine code from its own cache next to it. Files are written to a temporary name and renamed,
so concurrent processes never see half a file; a file whose text is not what we would write
(corrupt, stale, or another module's) is rewritten before import, and numba's cache entries of
that file name are deleted with it. numba checks its index against the source file, not its
data files: an entry that does not unpickle or holds another function's machine code is
deleted before numba reads it. Within a process one lock covers the check, the write and the
import: threads that ask for the same module together import it once, and none sees it half
executed. numba compiles its functions later, at their first call, outside it.

A cache folder that cannot be made or written (a file in its place, no write permission) is
replaced, for this process, by a temporary folder removed at exit, with one warning.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import importlib.util
import os
import pickle
import shutil
import sys
import tempfile
import threading
import types
import warnings
from pathlib import Path

import numba
from numba.core.funcdesc import FunctionDescriptor

from .._version import __version__

_PACKAGE = "numbascan_generated"      # parent of generated modules in sys.modules
_LOADED: dict[str, object] = {}
_LOCK = threading.Lock()
# cache folder that could not be used -> the temporary folder used instead by this process
_FALLBACK: dict[Path, Path] = {}
_FALLBACK_LOCK = threading.Lock()


def cache_dir() -> Path:
    root = os.environ.get("NUMBASCAN_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "numbascan")
    # numba's cache does not key on the optimisation level: keep levels apart
    opt = int(numba.config.OPT)
    path = Path(root) / f"v{__version__}-numba{numba.__version__}-O{opt}"
    if path in _FALLBACK:
        return _FALLBACK[path]
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    except OSError as error:
        return _fall_back(path, error)
    return path


def _fall_back(path: Path, error: OSError) -> Path:
    """The temporary folder that replaces the unusable cache folder ``path`` in this process
    (made, and warned about, once; removed at exit)."""
    with _FALLBACK_LOCK:
        if path not in _FALLBACK:
            temporary = Path(tempfile.mkdtemp(prefix="numbascan-cache-"))
            atexit.register(shutil.rmtree, temporary, ignore_errors=True)
            _FALLBACK[path] = temporary
            reason = error.strerror or str(error)
            warnings.warn(f"numbascan cannot use the cache folder {path} ({reason}): compiled "
                          f"code is kept in {temporary} until this process exits",
                          RuntimeWarning, stacklevel=3)
        return _FALLBACK[path]


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
        folder = cache_dir()
        path = folder / f"ns_{key}.py"
        try:
            current = path.read_text() if path.exists() else None
        except (OSError, UnicodeDecodeError):
            current = ""
        if current != source:
            if current is not None:
                # the name is the hash of the source, so whatever numba cached under this
                # name was compiled from other text: never let it meet the right source
                _delete_numba_cache(path)
            try:
                _write_atomic(path, source)
            except OSError as error:
                path = _fall_back(folder, error) / path.name
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


def _delete_numba_cache(path: Path):
    """Delete every file numba cached for the module at ``path``."""
    for stale in (path.parent / "__pycache__").glob(f"{path.stem}.*"):
        try:
            stale.unlink()
        except OSError:
            pass


def _scrub_numba_cache(path: Path):
    """Delete numba cache files of this module that do not unpickle (corrupt or truncated) or
    hold the machine code of another function (a data file of another module or function under
    this name), so numba recompiles instead of failing or running the wrong code. numba checks
    an index against the source file, but trusts the data files it names."""
    cache = path.parent / "__pycache__"
    if not cache.is_dir():
        return
    modname = f"{_PACKAGE}.{path.stem}"
    for index in cache.glob(f"{path.stem}.*.nbi"):
        # index name: <module stem>.<qualname>-<line>.py<version>.nbi
        qualname = index.name[len(path.stem) + 1:].rsplit("-", 1)[0]
        try:
            with open(index, "rb") as f:
                pickle.load(f)
                pickle.loads(f.read())
            for data in cache.glob(index.name[:-4].rsplit(".", 1)[0] + ".*.nbc"):
                payload = pickle.loads(data.read_bytes())
                if not _compiled_from(payload, modname, qualname):
                    raise ValueError(f"{data.name} holds another function's machine code")
        except Exception:
            _delete_numba_cache(path)
            return


def _compiled_from(payload, modname: str, qualname: str) -> bool:
    """Whether an unpickled numba cache entry is the machine code of ``modname.qualname``
    (its function descriptor names the function it was compiled from)."""
    items = payload if isinstance(payload, tuple) else (payload,)
    found = [item for item in items if isinstance(item, FunctionDescriptor)]
    # numba's file names drop '<' and '>' from the qualname ('<locals>')
    return bool(found) and all(
        d.modname == modname and d.qualname.replace("<", "").replace(">", "") == qualname
        for d in found)
