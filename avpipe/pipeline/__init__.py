"""What to compute and where it lives: stage graph, fingerprints, cache store + index, runner, probe.

Nothing here knows about a particular extractor; stages plug in through
:func:`avpipe.pipeline.stage.register_stage`. Heavy imports (h5py, PyAV, joblib, torch) stay inside
the functions that need them so that importing this package — and planning a warm run — is cheap.
"""
