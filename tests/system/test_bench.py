"""Smoke test of the benchmark tools: they run and report in the promised shape.

Not a performance test: no figure is checked against a target here (tools/bench does
that and reports; timed tests on a shared machine would only flake). ``tools/bench
--quick`` builds its own namespace hosts; with the short runs here it takes about 2
minutes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.support import SCALE

ROOT = Path(__file__).resolve().parents[2]
PATHS = ("veth", "openvpn-aes", "openvpn-none", "relay", "etherws-ws", "etherws-wss",
         "etherws-ws-nooff", "etherws-wss-nooff")
OVERLOADED = PATHS[1:]
"""Every tunnel gets the UDP overload runs; veth (the kernel alone) does not."""
BENCH_TIMEOUT_S = 420


def _run(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run a tool in its own session; on timeout, SIGTERM its whole group (tools/bench
    then cleans up) and fail."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=timeout_s * SCALE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"{cmd[0]} did not finish within {timeout_s * SCALE:g}s:\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.timeout(BENCH_TIMEOUT_S * SCALE + 90)
def test_bench_quick_prints_its_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # The shape is checked, not the figures: short runs (110 s against 220 s for --quick
    # alone, a ninth of the whole suite) exercise every path and every report.
    res = _run([str(ROOT / "tools" / "bench"), "--quick", "--seconds", "2",
                "--overload-seconds", "1", "--pings", "30", "--loaded-pings", "20",
                "--json", str(out)], BENCH_TIMEOUT_S)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    lines = res.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("path "))
    assert lines[header].split()[:3] == ["path", "vs", "Gbit/s@1500"]
    assert "ratio" in lines[header].split()
    rows = {line.split()[0]: line.split() for line in lines[header + 1:header + 1 + len(PATHS)]}
    assert tuple(rows) == PATHS
    assert rows["etherws-ws"][1] == "openvpn-none"
    assert rows["etherws-wss"][1] == "openvpn-aes"
    assert rows["etherws-ws"][3].endswith("x")  # the ratio beside the throughput
    assert "\n== targets\n" in res.stdout

    section = next(i for i, line in enumerate(lines) if line.startswith("== overload"))
    assert lines[section + 1].split() == ["path", "MTU", "TCP", "1x", "got", "1x", "lost%",
                                          "2x", "sent", "2x", "got", "2x", "lost%",
                                          "rcvbuf", "2x", "at", "B", "recover", "ms",
                                          "2x/best"]
    overload_rows = {line.split()[0]: line.split()
                     for line in lines[section + 2:section + 2 + len(OVERLOADED)]}
    assert tuple(overload_rows) == OVERLOADED
    assert all(row[1] == "1500" for row in overload_rows.values())
    assert re.search(r"under 2x overload at MTU 1500: arrived at B / best: \d", res.stdout)

    result = json.loads(out.read_text())
    assert result["quick"] is True
    assert result["settings"]["mtus"] == [1500]
    assert result["settings"]["underlay_mtu"] >= 9000
    assert set(result["paths"]) == set(PATHS)
    for name, entry in result["paths"].items():
        assert entry["median"]["gbit_s"]["1500"] > 0, name
        assert entry["median"]["rtt_avg_ms"] > 0, name
        assert len(entry["runs"]["1500"]) == 1, name
        loaded = entry["median"]["loaded_rtt_p99_ms"]  # pings behind a bulk stream
        assert (loaded is None) if name == "veth" else loaded > 0, name
    for name, ref in (("etherws-ws", "openvpn-none"), ("etherws-wss", "openvpn-aes"),
                      ("etherws-ws-nooff", "openvpn-none"),
                      ("etherws-wss-nooff", "openvpn-aes")):
        entry = result["paths"][name]
        assert entry["reference"] == ref
        assert entry["ratio"]["gbit_s"]["1500"] > 0
        assert entry["ratio"]["cpu_s_per_gb"]["1500"] > 0
        roles = {role.split(":")[1] for role in entry["rss_mib"]}
        assert {"broker", "tap", "client", "peer"} <= roles, roles
        assert set(entry["rss_mib_overload"]) == set(entry["rss_mib"])
        assert entry["vs_relay"]["gbit_s"]["1500"] > 0  # the one-process reference
    for name in OVERLOADED:
        found = result["paths"][name]["overload"]
        assert list(found) == ["1500"], name
        median = found["1500"]["median"]
        assert median["tcp_gbit_s"] > 0 and median["best_gbit_s"] > 0, name
        assert median["delivered_2x_gbit_s"] > 0 and median["ratio"] > 0, name
        assert median["loss_2x_percent"] >= 0 and median["recovery_2x_s"] >= 0, name
        (run,) = found["1500"]["runs"]
        assert run["at_2x"]["rate_gbit_s"] == pytest.approx(2 * run["tcp_gbit_s"])
        assert run["at_1x"]["rate_gbit_s"] == pytest.approx(run["tcp_gbit_s"])
        assert run["at_2x"]["arrived_gbit_s"] >= run["at_2x"]["delivered_gbit_s"]
        assert run["ratio"] == pytest.approx(run["at_2x"]["arrived_gbit_s"]
                                             / run["best_gbit_s"])
    assert result["paths"]["veth"]["overload"] == {}
    assert result["settings"]["overload"]["factors"] == [1, 2]
    assert result["paths"]["veth"]["median"]["cpu_s_per_gb"]["1500"] is None  # kernel only
    assert result["broker_full_fdb_rss_mib"] > 0
    hop = result["zmq_hop"]  # the design's RTT floor (a ring hop), and two references
    assert hop["ring_hop_median_us"] > 0
    assert hop["hop_median_us"] > 0 and hop["unix_hop_median_us"] > 0
    assert hop["hops_per_ping"] == 8  # A's tap, broker, client; B's peer, broker, tap
    assert hop["ping_floor_ms"] == pytest.approx(
        hop["hops_per_ping"] * hop["hop_median_us"] / 1000, abs=1e-3)
    assert re.search(r"etherws-ws: 8 ring hops alone take [\d.]+ ms", res.stdout)
    assert re.search(r"as ZeroMQ hops: [\d.]+ ms", res.stdout)
    assert re.search(r"as Unix seqpacket hops \(no I/O threads\): [\d.]+ ms", res.stdout)
    assert {"target", "value", "limit", "met"} <= set(result["targets"][0])
    overload_targets = [t for t in result["targets"] if "overload" in t["target"]]
    assert [t["limit"] for t in overload_targets] == [0.9] * 8  # 4 etherws paths x 2 MTUs
    assert [t["value"] is None for t in overload_targets] == [False, True] * 4  # no 9000
    offload = [t for t in result["targets"] if "(offload)" in t["target"]]
    assert len(offload) == 8 and all("nooff" not in t["target"] for t in offload)
    assert [t["limit"] for t in offload[:4]] == [3.0, 2.0, 0.5, 1.0]  # issue 14's targets

    hosts = re.search(r"hosts (\S+) and (\S+),", res.stdout)
    assert hosts, res.stdout[:500]
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout.split()
    assert not set(hosts.groups()) & set(namespaces)  # cleaned up after itself


@pytest.mark.timeout(120 * SCALE)
def test_bench_broker_quick_reports_frames_per_second() -> None:
    res = _run([str(ROOT / "tools" / "bench-broker"), "--quick"], 60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[1].split()[0] == "case" and "frames/s" in lines[1]
    table = "\n".join(lines[2:])
    for case in ("unicast to a known port", "flood (broadcast)", "learning"):
        assert case in table
    assert lines[-1].startswith("memory: ")

    res = _run([str(ROOT / "tools" / "bench-broker"), "--quick", "--json"], 60)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert len(result["cases"]) >= 3
    for case in result["cases"]:
        assert case["frames_per_s"] > 0 and case["frames"] > 0, case
        assert case["out_frames_per_s"] >= case["frames_per_s"], case  # all forwarded
    assert result["memory"]["full"] is True
    assert 0 < result["memory"]["uss_mib"] <= result["memory"]["rss_mib"]
    assert result["memory"]["rss_mib"] > 0


@pytest.mark.timeout(240 * SCALE)
def test_profile_names_every_process_and_its_functions() -> None:
    # --no-offload: wire frames, so the broker's per-frame forwarding is among its top
    # functions; with super-frames it handles some 40 times fewer and may not be
    res = _run([str(ROOT / "tools" / "profile"), "--seconds", "3", "--no-offload"], 180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r"etherws ws://.*: [\d.]+ Gbit/s for 3 s", res.stdout), res.stdout
    sections = re.findall(r"^(\w):(\w+): ([\d.]+) of a core, (\d+) samples", res.stdout,
                          re.MULTILINE)
    roles = {f"{side}:{role}" for side, role, _, _ in sections}
    assert {"A:broker", "A:tap", "A:client", "B:broker", "B:tap", "B:peer"} <= roles
    busy = [(role, float(share), int(n)) for _, role, share, n in sections
            if role not in ("listener", "zygote")]  # they only start tunnels
    assert all(share > 0 and n > 0 for _, share, n in busy), busy  # they carried the stream
    assert re.search(r"^ +[\d.]+ %  Forwarder\.forward \(forwarding\.py\), mostly line \d+$",
                     res.stdout, re.MULTILINE), res.stdout  # the broker's hot function

    hosts = re.search(r"hosts (\S+) and (\S+), work directory (\S+)", res.stdout)
    assert hosts, res.stdout[:500]
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout.split()
    assert not set(hosts.groups()[:2]) & set(namespaces)  # cleaned up after itself
    work = hosts.group(3)
    assert not os.path.exists(work)
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if any(work in arg for arg in p.info["cmdline"] or [])]
    assert left == []  # its switches were stopped, not orphaned with their namespaces
