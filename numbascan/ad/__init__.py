"""Stage: IR -> IR derivatives.

`rules.py` holds the rule tables (one line per primitive); `engine.py` replays programs forward
(jvp) and backward (vjp) with them; `scan_rules.py` adds the scan primitive's rules and
`checkpoint.py` the checkpoint pass to those tables when imported, here. Nothing in this package
imports the user API: the transformations users call are `api/grad.py`.
"""

# imported for what they register: they fill rules.py's tables with the rules and passes of scans
from . import checkpoint, scan_rules  # noqa: F401
