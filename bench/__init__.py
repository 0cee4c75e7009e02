"""The benchmarks behind `slimdrive bench ...`, in one place on top of the layers: each prints its figures
(ratios measured side by side in one run) and writes them as JSON. See README.md for the commands."""
