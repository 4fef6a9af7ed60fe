"""Run every example of Theano's scan tutorial, ported to numbascan, in order.

    python examples/tour.py [--mode cpu|python|cuda]

Each example prints numbascan's result and then the NumPy comparison, as the
tutorial does.  The tour exits with status 1 if any example fails.
"""
import argparse
import ast
import os
import pathlib
import runpy
import sys
import traceback

HERE = pathlib.Path(__file__).resolve().parent


def examples():
    """The example scripts, in tutorial order."""
    return sorted(HERE.glob("[0-9][0-9]_*.py"))


def title(path):
    """The first line of an example's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else path.stem


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["cpu", "python", "cuda"],
                        help="numbascan mode for every scan (default: NUMBASCAN_MODE or cpu)")
    args = parser.parse_args(argv)
    if args.mode:
        os.environ["NUMBASCAN_MODE"] = args.mode

    passed, failed = [], []
    for path in examples():
        name = path.stem
        print(f"=== {name}: {title(path)}", flush=True)
        try:
            runpy.run_path(str(path), run_name="__main__")
        except Exception:
            traceback.print_exc()
            failed.append(name)
        else:
            passed.append(name)
        print(flush=True)

    print(f"{len(passed)} passed, {len(failed)} failed")
    if failed:
        print("failed: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
