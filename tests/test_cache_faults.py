"""SPEC section 4, the disk cache under faults: entries swapped between modules (names kept) are
not trusted, an unusable cache folder falls back to a temporary one with one warning, and
importing numbascan needs no writable folder at all.
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from numbascan.codegen import source

# Four eager scans; prints, as JSON, each one's result and the generated modules it added.
# (prod, total) have the same arguments, (weighted, peak) do not: swapping the machine code of
# the first pair gives wrong numbers, of the second a wrong call.
SCANS = textwrap.dedent("""
    import json
    import numpy as np
    import numbascan as ns
    from numbascan.codegen.source import cache_dir
    S = np.array([1.0, 2.0, 3.0, -4.0, 5.0])
    steps = dict(
        prod=lambda: ns.scan(lambda x, acc: acc * x, sequences=S,
                             outputs_info=np.float64(1.0)),
        total=lambda: ns.scan(lambda x, acc: acc + x, sequences=S,
                              outputs_info=np.float64(0.0)),
        weighted=lambda: ns.scan(lambda x, acc, w: acc + w * x, sequences=S,
                                 outputs_info=np.float64(0.0), non_sequences=np.float64(2.0)),
        peak=lambda: ns.scan(lambda x, acc: np.maximum(acc, x), sequences=S,
                             outputs_info=np.float64(-10.0)),
    )
    results, modules = {}, {}
    for name, run in steps.items():
        before = set(p.stem for p in cache_dir().glob("ns_*.py"))
        out, _ = run()
        results[name] = out.tolist()
        modules[name] = sorted(set(p.stem for p in cache_dir().glob("ns_*.py")) - before)
    print(json.dumps(dict(results=results, modules=modules)))
""")

S = np.array([1.0, 2.0, 3.0, -4.0, 5.0])
EXPECTED = dict(prod=np.cumprod(S), total=np.cumsum(S), weighted=np.cumsum(2.0 * S),
                peak=np.maximum.accumulate(S))
PAIRS = (("prod", "total"), ("weighted", "peak"))

FALLBACK_WARNING = "numbascan cannot use the cache folder"


def child_env(cache, **extra):
    env = dict(os.environ, NUMBASCAN_CACHE_DIR=str(cache), **extra)
    env.pop("NUMBASCAN_MODE", None)
    return env


def run_scans(cache, env=None):
    proc = subprocess.run([sys.executable, "-c", SCANS], capture_output=True, text=True,
                          env=env or child_env(cache), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, expected in EXPECTED.items():
        np.testing.assert_allclose(report["results"][name], expected, err_msg=name)
    return report, proc.stderr


def version_folder(cache):
    (folder,) = [p for p in cache.iterdir() if p.is_dir() and p.name.startswith("v")]
    return folder


def swap_contents(a: Path, b: Path):
    text_a, text_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(text_b)
    b.write_bytes(text_a)


def numba_entries(folder, stem, suffix):
    return sorted((folder / "__pycache__").glob(f"{stem}.*{suffix}"))


# ------------------------------------------------------------------------------------------------
# 1. swapped cache entries


@pytest.mark.parametrize("kinds", [("nbc",), ("py", "nbc"), ("py", "nbi", "nbc")])
def test_swapped_cache_entries_are_not_trusted(tmp_path, kinds):
    """Two scans' files swapped, names kept: later processes still get the right answers, and
    the machine code is compiled again, from the module's own source."""
    report, _ = run_scans(tmp_path)
    folder = version_folder(tmp_path)
    stems = {}
    for a, b in PAIRS:
        (stem_a,), (stem_b,) = report["modules"][a], report["modules"][b]
        stems[stem_a], stems[stem_b] = stem_b, stem_a
        if "py" in kinds:
            swap_contents(folder / f"{stem_a}.py", folder / f"{stem_b}.py")
        for kind in ("nbi", "nbc"):
            if kind in kinds:
                files_a = numba_entries(folder, stem_a, "." + kind)
                files_b = numba_entries(folder, stem_b, "." + kind)
                assert files_a and len(files_a) == len(files_b), (files_a, files_b)
                for fa, fb in zip(files_a, files_b):
                    swap_contents(fa, fb)
    run_scans(tmp_path)
    # repaired: each module's machine code is its own again (another process gets it right too)
    for stem, partner in stems.items():
        data = numba_entries(folder, stem, ".nbc")
        assert data, stem
        for p in data:
            blob = p.read_bytes()
            assert f"numbascan_generated.{stem}".encode() in blob, p.name
            assert f"numbascan_generated.{partner}".encode() not in blob, p.name
    run_scans(tmp_path)


def test_data_file_of_another_function_is_deleted(tmp_path):
    """_scrub_numba_cache deletes a data file that holds another module's machine code."""
    report, _ = run_scans(tmp_path)
    folder = version_folder(tmp_path)
    (stem_a,), (stem_b,) = report["modules"]["prod"], report["modules"]["total"]
    (data_a,), (data_b,) = (numba_entries(folder, s, ".nbc") for s in (stem_a, stem_b))
    shutil.copyfile(data_b, data_a)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import importlib.util, sys, types
        from pathlib import Path
        from numbascan.codegen import source
        sys.modules.setdefault(source._PACKAGE, types.ModuleType(source._PACKAGE))
        for stem in ({stem_b!r}, {stem_a!r}):     # the other module is loaded: data unpickles
            path = Path({str(folder)!r}) / (stem + ".py")
            spec = importlib.util.spec_from_file_location(source._PACKAGE + "." + stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            source._scrub_numba_cache(path)
    """)], capture_output=True, text=True, env=child_env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not numba_entries(folder, stem_a, ".nbc")
    assert numba_entries(folder, stem_b, ".nbc")


# ------------------------------------------------------------------------------------------------
# 2. an unusable cache folder


def _fallback_warnings(stderr):
    return [line for line in stderr.splitlines() if FALLBACK_WARNING in line]


def test_version_folder_replaced_by_file(tmp_path):
    run_scans(tmp_path)
    folder = version_folder(tmp_path)
    shutil.rmtree(folder)
    folder.write_text("not a folder")
    _, stderr = run_scans(tmp_path)
    (line,) = _fallback_warnings(stderr)
    assert str(folder) in line and "File exists" in line, line
    # the temporary folder is gone once the process has exited
    temporary = line.split("compiled code is kept in ")[1].split(" until")[0]
    assert not os.path.exists(temporary), temporary
    assert folder.read_text() == "not a folder"


def test_read_only_cache_folder(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(cache, os.W_OK):
            pytest.skip("this user writes into read-only folders (root): "
                        "test_read_only_cache_folder_simulated covers it")
        _, stderr = run_scans(cache)
        (line,) = _fallback_warnings(stderr)
        assert str(cache) in line and "Permission denied" in line, line
        assert not list(cache.iterdir())
    finally:
        cache.chmod(stat.S_IRWXU)


def _tiny_module(tag):
    return textwrap.dedent(f'''\
        """numbascan test module ({tag})."""
        from numba import njit


        @njit(cache=True)
        def add_one(x):
            return x + 1
    ''')


def _load_two_modules(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        modules = [source.load_module(_tiny_module(f"{tmp_path} {i}")) for i in range(2)]
    assert [m.add_one(1) for m in modules] == [2, 2]
    return modules, [w for w in caught if FALLBACK_WARNING in str(w.message)]


def test_read_only_cache_folder_simulated(tmp_path, monkeypatch):
    """An empty cache folder where nothing can be made (what chmod gives a user who is not root)."""
    root = tmp_path / "read-only"
    root.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if root in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setenv("NUMBASCAN_CACHE_DIR", str(root))
    modules, caught = _load_two_modules(tmp_path)
    (warning,) = caught
    assert str(root) in str(warning.message) and "Permission denied" in str(warning.message)
    for m in modules:
        assert root not in Path(m.__file__).parents
    assert not list(root.iterdir())


def test_unwritable_cache_folder_simulated(tmp_path, monkeypatch):
    """The version folder exists but a module cannot be written into it."""
    root = tmp_path / "no-writes"
    monkeypatch.setenv("NUMBASCAN_CACHE_DIR", str(root))
    folder = source.cache_dir()
    real_mkstemp = source.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(source.tempfile, "mkstemp", mkstemp)
    modules, caught = _load_two_modules(tmp_path)
    (warning,) = caught
    assert str(folder) in str(warning.message)
    assert not list(folder.glob("ns_*.py"))


# ------------------------------------------------------------------------------------------------
# 3. import with no writable folder but the cache folder

# Where this user can write into read-only folders (root), numba's cache locators are told so.
REFUSE_WRITES = textwrap.dedent("""
    import os
    if os.environ.get("NUMBASCAN_TEST_ONLY_WRITABLE"):
        import numba.core.caching as caching
        writable = os.path.realpath(os.environ["NUMBASCAN_TEST_ONLY_WRITABLE"]) + os.sep
        real_ensure = caching._CacheLocator.ensure_cache_path

        def ensure_cache_path(self):
            path = os.path.realpath(self.get_cache_path())
            if not (path + os.sep).startswith(writable):
                raise PermissionError(13, "Permission denied", path)
            real_ensure(self)

        caching._CacheLocator.ensure_cache_path = ensure_cache_path
""")

USE_RANDOM = textwrap.dedent("""
    import numpy as np
    import numbascan as ns
    import numbascan.random as nr
    assert os.path.realpath(ns.__file__).startswith(os.path.realpath(os.environ["PKG"])), ns.__file__
    rng = ns.RandomStreams(3)
    big = rng.normal(size=200_000)                     # the bulk kernels
    assert big.shape == (200_000,) and abs(big.mean()) < 0.05
    assert 0.0 <= float(nr.uniform_nb(np.uint64(7), np.uint64(1), 0.0, 1.0)) < 1.0
    out, _ = ns.scan(lambda x, acc: acc + x * rng.uniform(), sequences=np.ones(4),
                     outputs_info=np.float64(0.0))     # generated code calling the kernels
    assert out.shape == (4,) and np.all(np.diff(out) > 0)
    print("OK")
""")


def _chmod_tree(top: Path, mode_dir, mode_file):
    for path in [top, *top.rglob("*")]:
        path.chmod(mode_dir if path.is_dir() else mode_file)


def test_import_needs_no_writable_folder(tmp_path):
    """HOME and the package folder read-only, NUMBASCAN_CACHE_DIR writable: import and first use
    work (numbascan's own kernels then compile without numba's disk cache)."""
    pkg = tmp_path / "pkg"
    shutil.copytree(Path(source.__file__).parents[1], pkg / "numbascan",
                    ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    home.mkdir()
    cache = tmp_path / "cache"
    env = child_env(cache, HOME=str(home), PYTHONPATH=str(pkg), PKG=str(pkg))
    for name in ("XDG_CACHE_HOME", "NUMBA_CACHE_DIR"):
        env.pop(name, None)
    read_only = stat.S_IRUSR | stat.S_IXUSR
    _chmod_tree(pkg, read_only, stat.S_IRUSR)
    home.chmod(read_only)
    try:
        if os.access(pkg / "numbascan", os.W_OK) or os.access(home, os.W_OK):
            env["NUMBASCAN_TEST_ONLY_WRITABLE"] = str(cache)
        proc = subprocess.run([sys.executable, "-c", REFUSE_WRITES + USE_RANDOM],
                              capture_output=True, text=True, env=env, cwd=pkg, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip().endswith("OK")
        assert not list(pkg.rglob("*.nbi")) and not list(home.rglob("*"))
        assert list(cache.rglob("ns_*.py"))
    finally:
        _chmod_tree(pkg, stat.S_IRWXU, stat.S_IRUSR | stat.S_IWUSR)
        home.chmod(stat.S_IRWXU)
