"""Running avpipe on more than one device or machine: per-GPU Dask workers and how a task's
``--device`` is read on the worker that runs it."""
