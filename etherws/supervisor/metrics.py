"""Prometheus metrics of the switch, read from the shared tables at scrape time (I/O).

Nothing is counted for the metrics: a scrape reads the port table, the FDB header and
each worker's /proc entries (psutil), so forwarding pays nothing for them. The server is
prometheus-client's, in a thread of the supervisor; ``collect`` copies the port list
before it walks it, as the supervisor's loop may change it meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from etherws.supervisor.policy import State
from etherws.supervisor.ports import Port, PortManager
from etherws.tables import FdbTable, PortKind, PortTable

LABELS = ["port", "name", "type", "target"]


def _labels(port: Port) -> list[str]:
    return [str(port.number), port.name or "", port.kind.label, port.target]


class SwitchCollector:
    """Collects the switch's metrics on each scrape."""

    def __init__(self, ports: PortManager, table: PortTable, fdb: FdbTable) -> None:
        self.ports = ports
        self.table = table
        self.fdb = fdb

    def collect(self) -> Iterator[Metric]:
        """The metric families, as prometheus-client asks for them."""
        counters = {key: CounterMetricFamily(f"etherws_port_{key}", text, labels=LABELS)
                    for key, text in (
                        ("rx_frames", "Frames the port received from its medium"),
                        ("tx_frames", "Frames the port sent out"),
                        ("rx_bytes", "Bytes the port received from its medium"),
                        ("tx_bytes", "Bytes the port sent out"),
                        ("drops", "Frames dropped at the port (full queues, shut, limits)"),
                        ("errors", "Frames or messages of the port that were malformed"),
                        ("restarts", "Restarts of the port's worker"),
                        ("loop_blocks", "Times the loop guard blocked the port"),
                        ("cpu_seconds", "CPU time of the port's current worker"))}
        up = GaugeMetricFamily("etherws_port_up", "1 while the port's worker is up (for "
                               "a tunnel port: while its link is up)", labels=LABELS)
        rss = GaugeMetricFamily("etherws_port_rss_bytes", "Resident memory of the port's "
                                "worker", labels=LABELS)
        for port in list(self.ports.ports.values()):
            lv = _labels(port)
            slot = self.table.read(port.slot)
            for key, value in (("rx_frames", slot.rx), ("tx_frames", slot.tx),
                               ("rx_bytes", slot.rx_bytes), ("tx_bytes", slot.tx_bytes),
                               ("drops", slot.drops), ("errors", slot.errors),
                               ("restarts", port.child.life.restarts),
                               ("loop_blocks", slot.loop_blocks)):
                counters[key].add_metric(lv, value)
            link = self.ports.link(port) if port.kind in (PortKind.CLIENT,
                                                          PortKind.SERVER) else None
            running = port.child.life.state is State.UP
            up.add_metric(lv, float(running and (link is None or link["state"] == "up")))
            usage = port.child.usage()
            if usage is not None:
                counters["cpu_seconds"].add_metric(lv, usage[0])
                rss.add_metric(lv, usage[1])
        yield from counters.values()
        yield up
        yield rss
        yield from self._switch()

    def _switch(self) -> Iterator[Metric]:
        fdb = self.fdb
        yield GaugeMetricFamily("etherws_fdb_entries", "Learned addresses", value=fdb.in_use)
        yield GaugeMetricFamily("etherws_fdb_capacity", "FDB capacity", value=fdb.capacity)
        refused = CounterMetricFamily("etherws_fdb_refused", "Learns refused",
                                      labels=["reason"])
        refused.add_metric(["table_full"], fdb.refused_full)
        refused.add_metric(["port_full"], fdb.refused_port)
        refused.add_metric(["move_held"], fdb.held_moves)
        yield refused
        age = (time.monotonic_ns() - self.table.broker_heartbeat_ns()) / 1e9
        yield GaugeMetricFamily("etherws_broker_heartbeat_age_seconds",
                                "Seconds since the broker's last heartbeat", value=age)
        restarts = CounterMetricFamily("etherws_process_restarts", "Restarts of the "
                                       "switch's own processes", labels=["process"])
        restarts.add_metric(["broker"], self.ports.broker.life.restarts)
        if self.ports.listener is not None:
            restarts.add_metric(["listener"], self.ports.listener.life.restarts)
        if self.ports.zygote is not None:
            restarts.add_metric(["zygote"], self.ports.zygote.life.restarts)
        yield restarts
        gone = self.ports.gone_peers
        yield CounterMetricFamily("etherws_gone_peers", "Accepted peers that are gone",
                                  value=gone.peers)


class MetricsServer:
    """prometheus-client's HTTP server for one switch."""

    def __init__(self, host: str, port: int, collector: SwitchCollector) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(collector)
        self._server: Any = None
        self.host, self.port = host, port

    def start(self) -> None:
        """Listen and serve in a thread; OSError when the address cannot be bound."""
        self._server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
