"""The trusted parent of an execution environment: zygote client, worker pool, the channel to
a worker, validation of the worker's frames, result shaping, process-tree control. Nothing
here runs user code or unpickles."""
