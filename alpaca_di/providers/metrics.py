"""Prometheus metrics of every shared connection (the optional ``alpaca-di[metrics]`` extra).

One call registers them with ``prometheus_client``'s default registry (or the one
given); serve them as usual, or from :func:`~alpaca_di.serve_health` at ``/metrics``::

    from alpaca_di import register_metrics
    from prometheus_client import start_http_server

    register_metrics()                 # idempotent; reads every registry of the process
    start_http_server(9100)

In one process the values are read from the hubs at scrape time (a custom
collector): nothing is added to the path of a message, except the sampled delivery
latency (one message in 64, see :mod:`alpaca_di.hub.latency`). With
``PROMETHEUS_MULTIPROC_DIR`` set (several uvicorn or gunicorn workers) a collector
cannot see the other processes: each process instead writes its values into
``prometheus_client``'s multiprocess files, every ``interval`` seconds and at each
scrape it serves, and :func:`metrics_exposition` aggregates all of them through
``MultiProcessCollector``.

Labels never hold a secret or a key id: accounts appear as the masked
``fingerprint``, endpoints as host and path (no scheme, credentials or query), and
consumers by the ``name`` given at subscribe, the unnamed ones as ``_unnamed``.
:data:`METRICS` lists every metric (``docs/metrics.md`` documents each; a test
keeps the two in step).

Declared in a container, :func:`init_metrics` registers at ``init_resources()``
and unregisters at ``shutdown_resources()``::

    class App(containers.DeclarativeContainer):
        config = providers.Configuration()
        alpaca = providers.Container(AlpacaContainer, config=config.alpaca)
        metrics = providers.Resource(init_metrics)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog

from alpaca_di.hub.consumers import ConsumerTotals
from alpaca_di.hub.health import ConnectionHealth
from alpaca_di.hub.latency import set_latency_observer
from alpaca_di.hub.registry import ConnectionRegistry
from alpaca_di.transport.states import ConnectionState

try:
    import prometheus_client
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised in a process without it
    raise ImportError(
        "alpaca-di metrics need prometheus_client: pip install 'alpaca-di[metrics]'"
    ) from exc

__all__ = [
    "CONNECTION_LABELS",
    "CONSUMER_LABELS",
    "LATENCY_BUCKETS",
    "LATENCY_METRIC",
    "METRICS",
    "AlpacaCollector",
    "AlpacaMetrics",
    "MetricSpec",
    "endpoint_label",
    "init_metrics",
    "metric_names",
    "metrics_exposition",
    "register_metrics",
]

CONNECTION_LABELS = ("kind", "endpoint", "fingerprint")
"""The labels of every per-connection series."""
CONSUMER_LABELS = (*CONNECTION_LABELS, "consumer")
"""The labels of every per-consumer series."""

LATENCY_METRIC = "alpaca_di_delivery_latency_seconds"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_log = structlog.get_logger("alpaca_di.metrics")
_Labels = tuple[str, ...]
_Type = Literal["counter", "gauge"]
_Values = dict[_Labels, float]


@dataclass(frozen=True)
class _Connection:
    """What the readers of :data:`METRICS` get: one hub's health and consumer totals."""

    health: ConnectionHealth
    consumers: dict[str, ConsumerTotals]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name, type, help, labels, and how to read it from a connection.

    ``read`` yields ``(extra label values, value)`` pairs for one connection; the
    connection's own labels (:data:`CONNECTION_LABELS`) come first. A new metric is
    one entry of :data:`METRICS` (see :func:`_per_connection` and :func:`_per_consumer`).
    """

    name: str
    type: _Type
    help: str
    labels: _Labels
    read: Callable[[_Connection], Iterable[tuple[_Labels, float]]]

    @property
    def exposed(self) -> str:
        """The sample name in the exposition (counters end in ``_total``)."""
        return self.name + "_total" if self.type == "counter" else self.name


def _per_connection(
    name: str, type_: _Type, help_: str, read: Callable[[ConnectionHealth], float]
) -> MetricSpec:
    return MetricSpec(name, type_, help_, CONNECTION_LABELS, lambda c: [((), read(c.health))])


def _per_consumer(
    name: str, type_: _Type, help_: str, read: Callable[[ConsumerTotals], float]
) -> MetricSpec:
    return MetricSpec(
        name,
        type_,
        help_,
        CONSUMER_LABELS,
        lambda c: [((consumer,), read(totals)) for consumer, totals in c.consumers.items()],
    )


def _states(c: _Connection) -> list[tuple[_Labels, float]]:
    return [((s.value,), float(c.health.state == s.value)) for s in ConnectionState]


def _symbols(c: _Connection) -> list[tuple[_Labels, float]]:
    return [((channel,), float(n)) for channel, n in sorted(c.health.subscriptions.items())]


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "alpaca_di_connection_state",
        "gauge",
        "1 for the state the connection is in, 0 for the others",
        (*CONNECTION_LABELS, "state"),
        _states,
    ),
    _per_connection("alpaca_di_reconnects", "counter", "Reconnects", lambda h: h.reconnects),
    _per_connection(
        "alpaca_di_messages_received",
        "counter",
        "Data messages decoded from the server's frames",
        lambda h: h.messages_received,
    ),
    _per_connection(
        "alpaca_di_messages_parsed",
        "counter",
        "Messages built into a model for typed consumers (once per message)",
        lambda h: h.messages_parsed,
    ),
    _per_connection(
        "alpaca_di_messages_malformed",
        "counter",
        "Frames or messages from the server that could not be decoded or parsed",
        lambda h: h.malformed,
    ),
    _per_connection(
        "alpaca_di_consumers", "gauge", "Open subscriptions of the stream", lambda h: h.consumers
    ),
    MetricSpec(
        "alpaca_di_subscribed_symbols",
        "gauge",
        "Symbols on the wire per channel (wanted by at least one consumer)",
        (*CONNECTION_LABELS, "channel"),
        _symbols,
    ),
    _per_consumer(
        "alpaca_di_consumer_subscriptions",
        "gauge",
        "Open subscriptions of the consumer",
        lambda t: t.subscriptions,
    ),
    _per_consumer(
        "alpaca_di_consumer_delivered",
        "counter",
        "Messages handed to the consumer's handler or iterator",
        lambda t: t.delivered,
    ),
    _per_consumer(
        "alpaca_di_consumer_dropped",
        "counter",
        "Messages discarded by the consumer's overflow policy",
        lambda t: t.dropped,
    ),
    _per_consumer(
        "alpaca_di_consumer_queue_depth",
        "gauge",
        "Messages waiting in the consumer's queues",
        lambda t: t.queued,
    ),
    _per_consumer(
        "alpaca_di_consumer_errors",
        "counter",
        "Exceptions raised by the consumer's handler",
        lambda t: t.errors,
    ),
)
"""Every metric read from the connections (plus the latency histogram, :data:`LATENCY_METRIC`)."""

_LATENCY_HELP = "Sampled delay from the server's timestamp of a message to its handler"


def metric_names() -> dict[str, str]:
    """Every exposed metric name and its type (the reference ``docs/metrics.md`` documents)."""
    names: dict[str, str] = {spec.exposed: spec.type for spec in METRICS}
    names[LATENCY_METRIC] = "histogram"
    return names


def endpoint_label(url: str) -> str:
    """The ``endpoint`` label of a URL: host[:port] and path (no scheme, credentials or query).

    Example::

        endpoint_label("wss://stream.data.alpaca.markets/v2/iex?x=1")
        # 'stream.data.alpaca.markets/v2/iex'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable>"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}{'' if port is None else f':{port}'}{parts.path}"


def _connections(registries: Iterable[ConnectionRegistry]) -> Iterator[_Connection]:
    for registry in registries:
        for hub in registry.hubs():
            try:
                yield _Connection(hub.health(), hub.consumers.snapshot())
            except Exception:  # one broken hub must not fail the whole scrape
                _log.exception("metrics.read_failed", kind=hub.kind.value)


def _collect_values(registries: Iterable[ConnectionRegistry]) -> dict[str, _Values]:
    """Every metric's values, summed over connections with the same labels."""
    values: dict[str, _Values] = {spec.name: {} for spec in METRICS}
    for connection in _connections(registries):
        health = connection.health
        base = (health.kind, endpoint_label(health.endpoint), health.fingerprint)
        for spec in METRICS:
            series = values[spec.name]
            for extra, value in spec.read(connection):
                key = base + extra
                series[key] = series.get(key, 0.0) + float(value)
    return values


class AlpacaCollector(Collector):
    """A ``prometheus_client`` collector reading the hubs of some registries at scrape time.

    ``registries`` is a callable returning the registries to read (default: every
    live :class:`~alpaca_di.hub.registry.ConnectionRegistry` of the process).
    Usually made by :func:`register_metrics`::

        registry = CollectorRegistry()
        registry.register(AlpacaCollector())
    """

    def __init__(
        self, registries: Callable[[], Iterable[ConnectionRegistry]] | None = None
    ) -> None:
        self._registries = registries or ConnectionRegistry.live

    def values(self) -> dict[str, _Values]:
        """Every metric's current values by label values (what a scrape shows)."""
        return _collect_values(self._registries())

    def collect(self) -> Iterator[Metric]:
        values = self.values()
        for spec in METRICS:
            family: Metric
            if spec.type == "counter":
                family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            else:
                family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels, value in sorted(values[spec.name].items()):
                family.add_metric(labels, value)
            yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())  # values are only known at scrape time


class _Publisher:
    """Multiprocess mode: writes this process's values into prometheus_client's files.

    Counters are incremented by what grew since the last write (a connection that
    started over counts from zero again), so they stay monotonic and survive the
    process in the files; gauges are ``livesum`` (the live processes' values added).
    """

    def __init__(self, collector: AlpacaCollector, interval: float) -> None:
        self._collector = collector
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="alpaca-di-metrics", daemon=True
        )
        self._thread.start()

    def publish(self) -> None:
        """Write the current values now."""
        _write_multiprocess(self._collector.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.publish()
            except Exception:  # logged; the next round tries again
                _log.exception("metrics.publish_failed")


# Multiprocess mode: one set of metric objects per process, and what was written last
# (a metric object reads its previous value back from the process's file, so a second
# set would count everything twice).
_mp_lock = threading.Lock()
_mp_metrics: dict[str, Any] = {}
_mp_last: dict[str, _Values] = {}


def _write_multiprocess(values: dict[str, _Values]) -> None:
    with _mp_lock:
        if not _mp_metrics:
            for spec in METRICS:
                if spec.type == "counter":
                    _mp_metrics[spec.name] = prometheus_client.Counter(
                        spec.name, spec.help, spec.labels, registry=None
                    )
                else:
                    _mp_metrics[spec.name] = prometheus_client.Gauge(
                        spec.name, spec.help, spec.labels, registry=None,
                        multiprocess_mode="livesum",
                    )
        for spec in METRICS:
            metric, now = _mp_metrics[spec.name], values[spec.name]
            last = _mp_last.get(spec.name, {})
            if spec.type == "counter":
                for labels, value in now.items():
                    grown = value - last.get(labels, 0.0)
                    if grown < 0:  # a new hub for these labels: counting from zero
                        grown = value
                    if grown:
                        metric.labels(*labels).inc(grown)
            else:
                for labels in last.keys() - now.keys():
                    metric.labels(*labels).set(0)
                for labels, value in now.items():
                    metric.labels(*labels).set(value)
            _mp_last[spec.name] = now


class AlpacaMetrics:
    """alpaca-di's metrics registered with one ``prometheus_client`` registry.

    Made by :func:`register_metrics` (once per registry) or :func:`init_metrics`.
    ``multiprocess`` tells whether values go to ``PROMETHEUS_MULTIPROC_DIR``'s files.
    :meth:`close` unregisters them and stops the latency sampling they asked for.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        registries: Callable[[], Iterable[ConnectionRegistry]] | None,
        *,
        multiprocess: bool,
        interval: float,
    ) -> None:
        self.registry = registry
        self.multiprocess = multiprocess
        self.collector = AlpacaCollector(registries)
        self._publisher: _Publisher | None = None
        if multiprocess:
            self._publisher = _Publisher(self.collector, interval)
            self.latency = prometheus_client.Histogram(
                LATENCY_METRIC, _LATENCY_HELP, ("kind", "endpoint"), registry=None,
                buckets=LATENCY_BUCKETS,
            )
        else:
            registry.register(self.collector)
            self.latency = prometheus_client.Histogram(
                LATENCY_METRIC, _LATENCY_HELP, ("kind", "endpoint"), registry=registry,
                buckets=LATENCY_BUCKETS,
            )
        self._children: dict[tuple[str, str], Any] = {}
        _observers.append(self)
        set_latency_observer(_observe)

    def publish(self) -> None:
        """Multiprocess mode: write this process's values now (a no-op otherwise)."""
        if self._publisher is not None:
            self._publisher.publish()

    def observe(self, kind: str, endpoint: str, seconds: float) -> None:
        """Record one latency sample."""
        child = self._children.get((kind, endpoint))
        if child is None:
            child = self._children[(kind, endpoint)] = self.latency.labels(
                kind, endpoint_label(endpoint)
            )
        child.observe(seconds)

    def close(self) -> None:
        """Unregister from the registry, stop publishing; idempotent."""
        with _lock:
            if _installed.get(id(self.registry)) is self:
                del _installed[id(self.registry)]
            if self in _observers:
                _observers.remove(self)
            if not _observers:
                set_latency_observer(None)
        if self._publisher is not None:
            self._publisher.close()
            self.publish()
        else:
            for collector in (self.collector, self.latency):
                try:
                    self.registry.unregister(collector)
                except KeyError:
                    pass

    def __repr__(self) -> str:
        mode = "multiprocess" if self.multiprocess else "collector"
        return f"<AlpacaMetrics {mode}>"


_lock = threading.Lock()
_installed: dict[int, AlpacaMetrics] = {}
_observers: list[AlpacaMetrics] = []


def _observe(kind: str, endpoint: str, seconds: float) -> None:
    for metrics in list(_observers):
        metrics.observe(kind, endpoint, seconds)


def register_metrics(
    registry: CollectorRegistry | None = None,
    *,
    registries: Callable[[], Iterable[ConnectionRegistry]] | None = None,
    multiprocess: bool | None = None,
    interval: float = 5.0,
) -> AlpacaMetrics:
    """Register alpaca-di's metrics with ``registry`` (default: prometheus_client's REGISTRY).

    Idempotent: a second call for the same registry returns the first result.

    Args:
        registry: the ``CollectorRegistry`` to register with.
        registries: a callable returning the connection registries to read
            (default: every live one of the process, which covers every container).
        multiprocess: write to ``PROMETHEUS_MULTIPROC_DIR``'s files instead of
            registering a collector; default: when that variable is set.
        interval: multiprocess mode: seconds between two writes of this process's
            values (each scrape this process serves writes them first, too).

    Example::

        metrics = register_metrics()
        print(prometheus_client.generate_latest().decode())
    """
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
        raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
    target = prometheus_client.REGISTRY if registry is None else registry
    if multiprocess is None:
        multiprocess = bool(os.environ.get(MULTIPROC_ENV))
    elif multiprocess and not os.environ.get(MULTIPROC_ENV):
        raise ValueError(
            f"multiprocess=True needs {MULTIPROC_ENV} set (to an empty directory) before "
            "prometheus_client is imported; unset, use multiprocess=None or False"
        )
    with _lock:
        existing = _installed.get(id(target))
        if existing is not None:
            return existing
        metrics = _installed[id(target)] = AlpacaMetrics(
            target, registries, multiprocess=multiprocess, interval=float(interval)
        )
    return metrics


def init_metrics(
    registry: CollectorRegistry | None = None,
    *,
    registries: Callable[[], Iterable[ConnectionRegistry]] | None = None,
    multiprocess: bool | None = None,
    interval: float = 5.0,
) -> Generator[AlpacaMetrics, None, None]:
    """Resource function: :func:`register_metrics` from init to shutdown.

    Example::

        metrics = providers.Resource(init_metrics)
    """
    metrics = register_metrics(
        registry, registries=registries, multiprocess=multiprocess, interval=interval
    )
    try:
        yield metrics
    finally:
        metrics.close()


def metrics_exposition(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The metrics as Prometheus text: ``(body, content type)``, for any web framework.

    Registers alpaca-di's metrics first if nobody did (:func:`register_metrics`). With
    ``PROMETHEUS_MULTIPROC_DIR`` set, this process writes its values first and the
    body aggregates every process's files (``MultiProcessCollector``)::

        body, content_type = metrics_exposition()
        return Response(body, media_type=content_type)
    """
    metrics = register_metrics(registry)
    if metrics.multiprocess:
        metrics.publish()
        aggregated = CollectorRegistry()
        MultiProcessCollector(aggregated)  # type: ignore[no-untyped-call]
        return prometheus_client.generate_latest(aggregated), prometheus_client.CONTENT_TYPE_LATEST
    return (
        prometheus_client.generate_latest(metrics.registry),
        prometheus_client.CONTENT_TYPE_LATEST,
    )
