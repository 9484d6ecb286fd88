"""The executor: untrusted Python with Jupyter semantics inside one execution environment.

Processes (SPEC §1 invariant 4):
    handler process (trusted, non-dumpable)  handler.py -> engine.Engine
      └─ zygote (exec'd with a scrubbed env, non-dumpable, child subreaper)   zygote.py
           numpy / pandas / matplotlib (inline backend) / IPython shell preloaded, gc frozen
           ├─ session worker (one per session, lives while the environment is warm)  worker.py
           ├─ one-shot worker (discarded after its run)
           └─ spare worker (forked ahead of need, takes the next new session or one-shot run)

Parent <-> zygote/worker messages are length-prefixed JSON (protocol.py); the parent never
unpickles. The worker applies the rlimits, the scrubbed environment and the workspace before
its first cell, runs cells through IPython (kernel.py), and does all S3 transfers itself
through the presigned URLs of the invocation (transfer.py, stdlib urllib): state snapshots
(snapshot.py, cloudpickle per variable, arrays out of band) and session files (workspace.py).
Why the worker and not the parent does the HTTP: state blobs then never exist in the trusted
process (invariant 3 holds by construction, no 1 GB copies through the parent), the parent
needs no network, and the presigned URLs only allow this session's keys anyway.

After every run the parent kills whatever user code left behind: orphans re-parent to the
zygote (subreaper), so `/proc/<pid>/task/*/children` of the zygote and the live workers finds
them without scanning /proc (procs.py). On timeout the worker gets 0.2 s to send the output it
has so far (SIGUSR1), then its whole tree is SIGSTOPped and SIGKILLed until nothing is left.

`python -m lambdas.executor.serve` runs one environment behind JSON lines (tests, tools).
Environment: LCI_TMP_ROOT (default /tmp), LCI_MAX_WORKERS, LCI_PREFORK_WORKER (settings.py).
"""
