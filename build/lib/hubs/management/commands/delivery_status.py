"""``manage.py delivery_status``: where acknowledged delivery stands, as one JSON object.

``pending``: (connection, message) pairs still waiting for an ack; ``spooled``: acknowledged
messages persisted but not yet published (the layer was down); ``dead_letters``: dead letters
kept. Reads the shared stores, so with Redis it describes every process.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from hubs.delivery.pending import get_pending
from hubs.loop_thread import loop_thread
from hubs.models import AckedMessage, DeadLetter


class Command(BaseCommand):
    help = "Print pending acknowledgements, spooled messages and dead letters as JSON."

    def handle(self, *args: Any, **options: Any) -> None:
        pending = loop_thread().run(get_pending().count(), timeout=30)
        status = {
            "pending": pending,
            "spooled": AckedMessage.objects.filter(published_at__isnull=True).count(),
            "messages": AckedMessage.objects.count(),
            "dead_letters": DeadLetter.objects.count(),
        }
        self.stdout.write(json.dumps(status))
