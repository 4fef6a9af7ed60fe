"""Stage: the scan loop — what a scan is, wherever it runs.

Its arguments (`args.py`), its step traced into an IR (`step.py`), the scan primitive that records
it in a traced program (`primitive.py`) and the reference loop every compiled path is tested
against (`reference.py`). The package is named `loop`, not `scan`: `numbascan.scan` is the public
function, which would shadow a sub-package of that name (`import numbascan.scan.args as m` fails).
"""
