"""dependency-injector providers: the connection registry and stream resources."""

from alpaca_di.providers.registry import ConnectionRegistry, Lease

__all__ = ["ConnectionRegistry", "Lease"]
