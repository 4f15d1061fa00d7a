"""Running avpipe on more than one device or machine: per-GPU Dask workers. How a task's
``--device`` is read on the worker that runs it is the runner's (:mod:`avpipe.pipeline.worker_device`)."""
