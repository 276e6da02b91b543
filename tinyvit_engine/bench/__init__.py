"""Measuring the engine against its peers, in one run on one machine (`python -m tinyvit_engine.bench`).

- peers.py      the benchmark: the engine, PyTorch, ONNX Runtime and OpenVINO, validated then timed; cold start, RSS
- costs.py      FLOPs and bytes of every node, and this machine's peaks: the roofline of `--profile`
- job.py        batch-job throughput against the model alone (`--job`)
- serve.py      `tinyvit serve` under load, real clients on loopback, and the fault matrix (`--serve`)
- lowering.py   the model's few modules that XNNPACK leaves out, rewritten for it (`--xnnpack`)
- reference.py  transformers models with real-scale random weights, the reference for the bench and the tests
"""
