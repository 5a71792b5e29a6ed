"""`ot drill NAME`: system-level fault drills. Each starts what it needs on a stack of its own,
runs load, injects a fault, heals it, waits for the consumers to catch up, and reconciles what was
produced with what the lake and Redis hold (nothing lost, nothing twice). `harness.py` has what
the drills share; one module per drill; the drills register as `ot.drills` entry points."""
