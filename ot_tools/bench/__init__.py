"""`ot bench`: the runner (`cli`) and one module per benchmark, each registered in pyproject.toml
under the `ot.benchmarks` entry points."""
