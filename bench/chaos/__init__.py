"""The chaos run (`scripts/chaos`): a ticket rush through faults, then the database's invariants.

Two `ticketing-service serve` replicas and the webhook shim on one embedded Postgres, the
payment service fake in this process; while buyers hold seats and pay through signed
callbacks, a replica is killed and restarted, Postgres restarts, the payment service hangs and
then answers 500, and hostile sockets sit on the shim. Then the run waits (bounded) for the
sweeper and reconciliation to settle and checks what the database says.
"""
