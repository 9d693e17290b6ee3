"""Benchmarks and the model-zoo table, behind the tools/benchmark_*.py and tools/model_stats.py scripts.

- ``model``: our models against PyTorchVideo's (clips/s, logit agreement);
- ``blocks``: latency, FLOPs and parameters each context block adds;
- ``data``: the data pipeline (decode-once testing, training clips/s);
- ``zoo``: parameters and FLOPs per config beside the papers' figures;
- ``timing``: the interleaved timing and command-line options the first two share.
"""
