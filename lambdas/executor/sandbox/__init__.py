"""Code that runs in the untrusted zygote and its workers (as the sandbox user on Lambda and in
the local stack): the IPython kernel, snapshots, transfers, the workspace and on-demand
packages. It talks to the trusted parent only through protocol.py frames."""
