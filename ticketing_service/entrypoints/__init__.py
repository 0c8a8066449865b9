"""The ways into the service: the command line, the gRPC server, the shim, the dev stack."""

import os

# Before gRPC is first imported, which reads it. gRPC's fork handlers serve a child that goes
# on using gRPC; these processes fork only to exec (pg_ctl, the spawned workers of `serve
# --workers`). With them on, each fork while gRPC's threads ran printed "Other threads are
# currently calling into gRPC, skipping fork() handlers" to stderr: a line that is not JSON.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
