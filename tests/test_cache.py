"""SPEC section 4: compiled code is cached on disk (NUMBASCAN_CACHE_DIR) and a new process
reuses it; a damaged cache never crashes a run nor gives a wrong result; processes sharing an
empty cache folder do not trip over each other.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# A scan with a fed-back output, a sequence with taps and a non-sequence; prints its result.
SCRIPT = textwrap.dedent("""
    import time
    import numpy as np
    import numbascan as ns
    S = np.arange(8.0)
    x0 = np.array([1.0, -1.0])
    w = np.array([0.5, 2.0])
    t0 = time.perf_counter()
    out, _ = ns.scan(lambda a, b, x, w: x * w + a - b,
                     sequences=dict(input=S, taps=[-1, 1]), outputs_info=x0, non_sequences=w)
    elapsed = time.perf_counter() - t0
    print(repr(out.tolist()))
    print("ELAPSED", elapsed)
""")


def expected():
    S, x, w = np.arange(8.0), np.array([1.0, -1.0]), np.array([0.5, 2.0])
    out = []
    for t in range(len(S) - 2):
        x = x * w + S[t] - S[t + 2]
        out.append(x)
    return np.array(out)


def run(cache, script=SCRIPT, timeout=120):
    env = dict(os.environ, NUMBASCAN_CACHE_DIR=str(cache))
    env.pop("NUMBASCAN_MODE", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return parse(proc.stdout)


def parse(stdout):
    lines = stdout.strip().splitlines()
    out = np.array(eval(lines[-2]))
    elapsed = float(lines[-1].split()[1])
    return out, elapsed


def modules(cache):
    return sorted(cache.rglob("ns_*.py"))


def numba_files(cache):
    return sorted(p for p in cache.rglob("*") if p.suffix in (".nbi", ".nbc")
                  and p.parent.name == "__pycache__")


def snapshot(paths):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in paths}


def test_generated_modules_written(tmp_path):
    out, _ = run(tmp_path)
    np.testing.assert_allclose(out, expected())
    mods = modules(tmp_path)
    assert mods, f"no ns_*.py under {tmp_path}: {list(tmp_path.rglob('*'))}"
    for m in mods:
        text = m.read_text()
        assert "njit" in text and "def " in text
    nb = numba_files(tmp_path)
    assert any(p.suffix == ".nbi" for p in nb) and any(p.suffix == ".nbc" for p in nb), nb


def test_second_process_reuses_cache(tmp_path):
    first, t1 = run(tmp_path)
    files = modules(tmp_path) + numba_files(tmp_path)
    before = snapshot(files)
    second, t2 = run(tmp_path)
    np.testing.assert_allclose(second, expected())
    np.testing.assert_array_equal(first, second)
    after_files = modules(tmp_path) + numba_files(tmp_path)
    # nothing recompiled: no new module or machine-code file, none rewritten
    assert sorted(after_files) == sorted(files)
    assert snapshot(after_files) == before
    assert t2 < t1 + 0.5, (t1, t2)


def test_corrupt_module_garbage(tmp_path):
    run(tmp_path)
    for m in modules(tmp_path):
        m.write_bytes(b"\x00\xff garbage (((\n def ??")
    out, _ = run(tmp_path)
    np.testing.assert_allclose(out, expected())


def test_tampered_module_is_not_trusted(tmp_path):
    """A module that still imports but computes something else must not be used."""
    run(tmp_path)
    mods = modules(tmp_path)
    for m in mods:
        text = m.read_text()
        tampered = text.replace(" - ", " + ").replace(" * ", " / ")
        assert tampered != text
        m.write_text(tampered)
    out, _ = run(tmp_path)
    np.testing.assert_allclose(out, expected())


def test_truncated_module(tmp_path):
    run(tmp_path)
    for m in modules(tmp_path):
        text = m.read_text()
        m.write_text(text[: len(text) // 2])
    out, _ = run(tmp_path)
    np.testing.assert_allclose(out, expected())


def test_corrupt_numba_cache_files(tmp_path):
    run(tmp_path)
    nb = numba_files(tmp_path)
    assert nb
    for p in nb:
        p.write_bytes(b"not a pickle at all")
    out, _ = run(tmp_path)
    np.testing.assert_allclose(out, expected())


def test_empty_module_file(tmp_path):
    run(tmp_path)
    for m in modules(tmp_path):
        m.write_text("")
    out, _ = run(tmp_path)
    np.testing.assert_allclose(out, expected())


def test_concurrent_processes_on_empty_cache(tmp_path):
    env = dict(os.environ, NUMBASCAN_CACHE_DIR=str(tmp_path))
    env.pop("NUMBASCAN_MODE", None)
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr[-3000:]
        results.append(parse(stdout)[0])
    for r in results:
        np.testing.assert_allclose(r, expected())
    # the folder is left usable: no temporary files, and a later run still works
    assert not list(tmp_path.rglob("*.tmp"))
    out, _ = run(tmp_path)
    np.testing.assert_allclose(out, expected())


def test_cache_dir_created_if_missing(tmp_path):
    cache = tmp_path / "does" / "not" / "exist"
    out, _ = run(cache)
    np.testing.assert_allclose(out, expected())
    assert modules(cache)


def test_jit_program_cached_across_processes(tmp_path):
    script = textwrap.dedent("""
        import time
        import numpy as np
        import numbascan as ns
        @ns.jit
        def f(A, k):
            r, _ = ns.scan(lambda p, a: p * a, outputs_info=np.ones_like(A), non_sequences=A,
                           n_steps=k)
            return r[-1] + A.sum()
        A = np.array([1.5, 2.0])
        t0 = time.perf_counter()
        out = f(A, 3)
        print(repr(out.tolist()))
        print("ELAPSED", time.perf_counter() - t0)
    """)
    A = np.array([1.5, 2.0])
    first, _ = run(tmp_path, script)
    np.testing.assert_allclose(first, A ** 3 + A.sum())
    files = modules(tmp_path) + numba_files(tmp_path)
    assert any("def main_" in m.read_text() for m in modules(tmp_path))
    before = snapshot(files)
    second, _ = run(tmp_path, script)
    np.testing.assert_allclose(second, A ** 3 + A.sum())
    assert snapshot(modules(tmp_path) + numba_files(tmp_path)) == before
