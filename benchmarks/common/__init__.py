"""What the benchmark scripts share: a leaf library that imports no script.

A benchmark is one script in benchmarks/, run from the repository root as a user runs it:

    python benchmarks/NAME.py [flags]

Python puts the script's own folder (benchmarks/) first on its path, so a script imports this package as
`common` with no path edits (tests and docs/hooks.py get benchmarks/ on their path from pytest's `pythonpath`
setting and the hook). A script

* imports only `common` (and noisecraft, torch, ...), never another script: what two scripts share moves here;
* records its machine with `common.machine.record(...)` (one schema; `AVX2_ENV` caps kernels as on a CPU without
  AVX-512), writes its figures with `common.results.write_result` / `append_record` into benchmarks/results/;
* trains through the CLI with `common.cli.train_cli` and judges with `common.judge`;
* renders its docs table, if it has one, with a function `render(result) -> str` using `common.tables` and
  `common.machine.describe`; benchmarks/figures.py (the one module that may import scripts) calls it.
"""
