"""tools/bench and tools/bench-broker: etherws against the kernel and OpenVPN.

Not part of etherws and not part of the test suite (tests/system/test_bench.py only
checks that ``tools/bench --quick`` and ``tools/bench-broker --quick`` run). Modules:

- ``proc``: commands with timeouts, background processes that die with the bench,
  polling with deadlines;
- ``lab``: two network-namespace hosts joined by a veth underlay;
- ``certs``: the OpenVPN PKI and the self-signed certificate for wss://;
- ``paths``: one ``BenchPath`` per way across (veth, OpenVPN, etherws);
- ``measure``: iperf3, ping, CPU seconds, RSS;
- ``overload``: iperf3 UDP at 1x and 2x a path's TCP throughput (no collapse under
  overload);
- ``report``: medians, ratios, the table, the targets, the JSON;
- ``main``: ``python -m benchlib``, what tools/bench runs;
- ``broker``: the broker's hot path without network (tools/bench-broker).
"""
