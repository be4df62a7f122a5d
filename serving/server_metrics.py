"""Request and batching counters of the model server, and their optional
Prometheus endpoint (TF Serving's `monitoring.config` `prometheus_config`).

The counters are always kept (tests and benchmarks read them); the HTTP
endpoint needs `prometheus_client`, which is optional: without it the
server logs that metrics export is off and serves gRPC as usual.
"""

from __future__ import annotations

import collections
import http.server
import logging
import threading
from collections.abc import Callable

import grpc

from serving.batch_scheduler import BatchStats

log = logging.getLogger(__name__)

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default


class ServerMetrics:
    """Thread-safe request counts by (model, API, status code)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()

    def record(self, model: str, api: str, code: grpc.StatusCode) -> None:
        with self._lock:
            self._counts[(model, api, code.name)] += 1

    def request_counts(self) -> dict[tuple[str, str, str], int]:
        """`{(model, api, status): count}`, e.g. `("user_implicit", "Predict", "OK")`."""
        with self._lock:
            return dict(self._counts)


class PrometheusEndpoint:
    """Serves the counters in Prometheus text format at `http://host:port/path`.

    Args:
      metrics: the request counters.
      batch_stats: returns the current batching counters.
      host: the interface to bind.
      port: the port (0 = any free port; see `port`).
      path: the URL path (TF Serving's default `/monitoring/prometheus/metrics`).
    """

    def __init__(self, metrics: ServerMetrics, batch_stats: Callable[[], BatchStats], host: str, port: int,
                 path: str = DEFAULT_PROMETHEUS_PATH):
        import prometheus_client  # noqa: F401  (checked by `start_prometheus`)
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(_Collector(metrics, batch_stats))
        path = path or DEFAULT_PROMETHEUS_PATH

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's name)
                if self.path.split("?", 1)[0] != path:
                    self.send_error(404, f"metrics are at {path}")
                    return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # noqa: A002  (http.server's signature)
                log.debug("prometheus endpoint: " + format, *args)

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="prometheus", daemon=True)
        self._thread.start()
        self.port = self._server.server_address[1]
        self.path = path

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Collector:
    """Reads the counters at scrape time (no second copy to keep in sync)."""

    def __init__(self, metrics: ServerMetrics, batch_stats: Callable[[], BatchStats]):
        self._metrics = metrics
        self._batch_stats = batch_stats

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        requests = CounterMetricFamily(":tensorflow:serving:request_count",
                                       "Requests by model, API and status.",
                                       labels=["model_name", "api", "status"])
        for (model, api, status), count in sorted(self._metrics.request_counts().items()):
            requests.add_metric([model, api, status], count)
        yield requests
        stats = self._batch_stats()
        yield CounterMetricFamily(":mer:serving:batches", "Session runs made for batched requests.",
                                  value=stats.batches)
        yield CounterMetricFamily(":mer:serving:batched_requests",
                                  "Requests that went through a batch queue.", value=stats.tasks)
        yield CounterMetricFamily(":mer:serving:requests_in_shared_batches",
                                  "Requests that shared a session run with another request.",
                                  value=stats.tasks_in_shared_batches)
        yield GaugeMetricFamily(":mer:serving:largest_batch_requests", "Most requests merged into one run.",
                                value=stats.largest_batch_tasks)


def start_prometheus(monitoring_config, metrics: ServerMetrics, batch_stats: Callable[[], BatchStats],
                     host: str, port: int | None) -> PrometheusEndpoint | None:
    """Starts the endpoint when `prometheus_config.enable` is set and it can run.

    Args:
      monitoring_config: a `MonitoringConfig` message, or None.
      metrics, batch_stats: what to export.
      host: the interface to bind.
      port: TF Serving's `--rest_api_port` (metrics are served over its HTTP
        port); None = not set, which leaves the endpoint off.

    Returns:
      The running endpoint, or None (not enabled, no port, or no
      `prometheus_client`; each logged).
    """
    if monitoring_config is None or not monitoring_config.prometheus_config.enable:
        return None
    if port is None:
        log.warning("monitoring config enables Prometheus, but no rest_api_port is set: "
                    "metrics export is off")
        return None
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        log.warning("monitoring config enables Prometheus, but prometheus_client is not installed "
                    "(pip install 'mer[serving]'): metrics export is off")
        return None
    endpoint = PrometheusEndpoint(metrics, batch_stats, host, port, monitoring_config.prometheus_config.path)
    log.info("Prometheus metrics at http://%s:%d%s", host, endpoint.port, endpoint.path)
    return endpoint
