"""Tools around the platform, not part of it: benchmarks (`ot bench`), the consumers' drills and
exactly-once coverage check, synthetic landing files and the detection evaluation.

The runtime packages (`streaming`, `ot_pipeline`) never import this package; it may import both.
"""
