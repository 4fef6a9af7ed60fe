"""Stage: core — the IR, the primitive table, scan layouts, IR passes, the traces open now.

Every other stage reads and writes these; they import nothing of numbascan but `random.py`.
"""
