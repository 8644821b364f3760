"""csext's benchmark suite: each csext path beside its raw floor and its peers, in one run.

`python -m bench` (or `make bench`) runs everything against the local RabbitMQ and writes
BENCHMARKS.md at the repository root; `python -m bench --smoke` runs every benchmark end to end
at a tiny size and only prints. Every figure is a ratio against a floor measured in the same run
on the same broker, because absolute numbers say more about the machine than about csext.
"""
