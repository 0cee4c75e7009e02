"""The benchmarks behind `slimdrive bench ...`, in one place on top of the layers: each prints its figures
(ratios measured side by side in one run) and writes them as JSON. See README.md for the commands. Here too
`slimdrive table` (bench/table.py): closed-loop scores by the suite runner beside `bench policy`'s measurements."""
