"""The benchmarks and the chaos run of the ticketing service; never imported by the service.

`python -m bench` (`scripts/bench`) runs the benchmark; `scripts/bench --help` lists the other
measurements, and `scripts/chaos` the chaos run (`bench.chaos`).
"""
