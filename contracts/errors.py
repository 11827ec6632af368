"""The small named exceptions that cross layers; only the consumer loop catches them."""

from __future__ import annotations


class TransientError(Exception):
    """Infrastructure trouble (lost connection, deadlock, serialisation failure).

    The loop retries the whole batch with capped backoff; nothing is acked or
    dead-lettered because of it.
    """


class RecordError(Exception):
    """One record cannot be processed; the loop isolates it and finally dead-letters it."""
