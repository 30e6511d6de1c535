"""Cluster features: node ids, session events and listeners, near cache, metrics.

See docs/cluster.md. ``SessionManager(events=True)`` sends every event
through the store's own channel (``shoal.cluster.channels``) to every node;
``manager.add_listener`` / ``@manager.listener`` receive them.
"""

from .events import EVENTS, Event
from .hub import Hub
from .listeners import Listener
from .near_cache import NearCache
from .node import default_node_id

__all__ = ["EVENTS", "Event", "Hub", "Listener", "NearCache", "default_node_id"]
