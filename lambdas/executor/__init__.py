"""The executor: untrusted Python with Jupyter semantics inside one execution environment.

The folders are the trust boundary: host/ is the trusted parent, sandbox/ runs as untrusted
code's neighbour (the zygote and its workers); protocol.py is all they share.

Processes (SPEC §1 invariant 4):
    handler process (trusted, non-dumpable)  handler.py -> host/engine.py Engine
      └─ zygote (exec'd with a scrubbed env, non-dumpable, child subreaper)   sandbox/zygote.py
           IPython shell loaded, then ready to fork; numpy / pandas / matplotlib (inline
           backend) preloaded between requests, then immortal objects, gc frozen, huge pages
           ├─ session worker (one per session, lives while the environment is warm)
           │                                                               sandbox/worker.py
           ├─ one-shot worker (discarded after its run)
           └─ spare worker (forked ahead of need, takes the next new session or one-shot run)

The parent: host/zygote_client.py starts and talks to the zygote, host/pool.py keeps the
workers (fork, spare, eviction, the stray-process kill after every run), host/channel.py runs
one exchange with a worker, host/results.py shapes what happened into the response.

Parent <-> zygote/worker messages are length-prefixed JSON (protocol.py: framing and the
frames' shapes as typed dicts, so the sandbox never imports pydantic; host/frames.py validates
what a worker sends with pydantic models); the parent never unpickles. The worker applies
the rlimits, the scrubbed environment and the workspace before its first cell, runs cells
through IPython (sandbox/kernel.py), and does all S3 transfers itself through the presigned
URLs of the invocation (sandbox/transfer.py, stdlib urllib): state snapshots (sandbox/snapshot.py,
cloudpickle per variable, arrays out of band) and session files (sandbox/workspace.py).
Why the worker and not the parent does the HTTP: state blobs then never exist in the trusted
process (invariant 3 holds by construction, no 1 GB copies through the parent), the parent
needs no network, and the presigned URLs only allow this session's keys anyway.

After every run the parent kills whatever user code left behind: orphans re-parent to the
zygote (subreaper), so `/proc/<pid>/task/*/children` of the zygote and the live workers finds
them without scanning /proc (host/procs.py). On timeout the worker gets 0.2 s to send the
output it has so far (SIGUSR1), then its whole tree is SIGSTOPped and SIGKILLed until nothing
is left. The timeout is the user's `timeout_ms` on every run: transfers before the cell and
saving after it have budgets of their own that never extend it (host/channel.py `Phase`).

Every run gets exactly one answer, from the worker: the parent drops channel bytes any other
process sent (SCM_CREDENTIALS), processes user code forks lose the channel at fork and exit at
the end of their copy of the cell, display data is made JSON-safe as it is captured
(sandbox/mime.py), and what a cell changed about its process is put back before the next one
(sandbox/hygiene.py). Tracebacks show the user's frames, not the executor's
(sandbox/tracebacks.py).

`python -m lambdas.executor.serve` runs one environment behind JSON lines (tests, tools).
Environment: LCI_TMP_ROOT (default /tmp), LCI_MAX_WORKERS, LCI_PREFORK_WORKER (settings.py).
"""
