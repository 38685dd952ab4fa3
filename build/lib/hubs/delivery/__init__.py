"""Reliable delivery: sequence numbers and history, retries with backoff, the circuit breaker."""
