"""The package version, below every stage.

Generated modules and their on-disk caches are keyed on it (codegen/source.py); it lives here and
not in `__init__.py`, which imports every stage, so that a stage can read it without importing
the user API.
"""

__version__ = "0.1.0"
