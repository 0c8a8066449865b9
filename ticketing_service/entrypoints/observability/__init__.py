"""Logs, metrics and request context for every entrypoint (gRPC server, webhook shim, CLI)."""
