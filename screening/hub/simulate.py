"""``mamoru hub simulate --units N``: N simulated units against a real broker, hub and PostgreSQL.

Bounded in count (``MAX_UNITS``) and in time (every phase has a deadline). The units are paho
clients driven from one thread by a selector (external loop), so 10,000 of them are 10,000
sockets, not 10,000 threads. The hub runs in its own process so its CPU and memory are its own.

Phases: (1) connect storm, every unit at once as after a town's power cut, each announcing
itself online; (2) steady state at a realistic rate; (3) the same at 10x; (4) a burst as fast as
the units can publish, to see what saturates first. Latency is unit -> PostgreSQL: the message's
``sent`` (set when the unit publishes) to the row's ``received`` (``clock_timestamp()`` at insert).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import selectors
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from screening.core.clock import iso_utc, utc_now
from screening.core.model import Action, CallOutcome, Category, Verdict
from screening.hubwire import CallSummary, Channel, Health, LineHealth, Message, Status, encode_message, topic

from .ingest import BrokerSettings, HubSubscriber, IngestSettings
from .servers import HUB_USER, MosquittoBroker, PostgresCluster, wait_for_port

log = logging.getLogger(__name__)

MAX_UNITS = 20_000
MAX_PHASE_S = 600.0
# A household's landline: about three calls a day; a health report every 15 minutes.
CALLS_PER_UNIT_HOUR = 3 / 24
HEALTH_PER_UNIT_HOUR = 4.0


@dataclass(frozen=True, slots=True)
class SimulationPlan:
    units: int
    steady_s: float = 30.0
    burst_s: float = 10.0
    storm_timeout_s: float = 180.0


@dataclass
class Usage:
    """CPU seconds and peak RSS of one server process (tree), sampled from /proc."""

    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0


@dataclass
class PhaseResult:
    name: str
    seconds: float
    published: int
    stored: int
    rate_offered_per_s: float
    rate_stored_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    cpu_percent: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_message: dict[str, float] = field(default_factory=dict)  # the cost, independent of machine load
    load_average: float = 0.0


def _proc_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _sample(pids: list[int]) -> tuple[float, float]:
    """(CPU seconds, RSS MB) summed over ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = rss = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
        except (OSError, IndexError, ValueError):
            continue
    return cpu, rss


class Meter:
    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.start: dict[str, float] = {}
        self.peak: dict[str, float] = {}

    def begin(self) -> None:
        self.start = {name: _sample(_proc_tree(pid))[0] for name, pid in self.roots.items()}
        self.peak = dict.fromkeys(self.roots, 0.0)

    def tick(self) -> None:
        for name, pid in self.roots.items():
            self.peak[name] = max(self.peak[name], _sample(_proc_tree(pid))[1])

    def end(self, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
        cpu = {name: round(100 * (_sample(_proc_tree(pid))[0] - self.start[name]) / max(seconds, 1e-6), 1)
               for name, pid in self.roots.items()}  # fmt: skip
        return cpu, {k: round(v, 1) for k, v in self.peak.items()}


class UnitSwarm:
    """N paho clients on one selector loop (no thread per unit)."""

    def __init__(self, units: list[tuple[str, str]], port: int, ca: Path) -> None:
        self.clients: list[mqtt.Client] = []
        self.connected: set[str] = set()
        self.port = port
        self.ca = ca
        self.selector = selectors.DefaultSelector()
        self.published = 0
        self.acked = 0
        self.dirty: set[mqtt.Client] = set()  # clients with bytes to write: pumping all 10,000 each turn is O(N)
        for unit, password in units:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unit, protocol=mqtt.MQTTv5)
            client.username_pw_set(unit, password)
            client.tls_set(ca_certs=str(ca))
            client.max_queued_messages_set(0)
            client.max_inflight_messages_set(100)
            client.user_data_set(unit)
            _, will = encode_message(Status(unit, online=False))
            client.will_set(topic(unit, Channel.STATUS), will, qos=1, retain=True)
            client.on_connect = self._on_connect
            client.on_publish = self._on_publish
            self.clients.append(client)

    def _on_connect(self, client: mqtt.Client, unit: str, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            self.connected.add(unit)
            self.publish(client, unit, Status(unit, online=True), retain=True)

    def _on_publish(self, *_: Any) -> None:
        self.acked += 1

    def publish(self, client: mqtt.Client, unit: str, message: Message, retain: bool = False) -> None:
        channel, payload = encode_message(message)
        client.publish(topic(unit, channel), payload, qos=1, retain=retain)
        self.published += 1
        self.dirty.add(client)

    def connect_all(self, deadline: float) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        for client in self.clients:
            if time.monotonic() > deadline:
                break
            try:
                client.connect("localhost", self.port, 120, clean_start=False, properties=props)
            except OSError as exc:
                log.warning("simulated unit could not connect: %s", exc)
                continue
            sock = client.socket()
            if isinstance(sock, socket.socket):
                self.selector.register(sock, selectors.EVENT_READ, client)
            self.dirty.add(client)
            if len(self.dirty) >= 50:
                self.pump(0)

    def pump(self, timeout_s: float) -> None:
        for key, _ in self.selector.select(timeout_s):
            client: mqtt.Client = key.data
            client.loop_read(100)
            self.dirty.add(client)  # reading a PUBACK may release a queued publish
        for client in list(self.dirty):
            if client.want_write():
                client.loop_write()
            if not client.want_write():
                self.dirty.discard(client)

    def misc(self) -> None:
        for client in self.clients:
            client.loop_misc()

    def close(self) -> None:
        for client in self.clients:
            try:
                client.disconnect()
                client.loop_write()
            except (OSError, ValueError):
                pass


def _run_hub(broker: BrokerSettings, ingest: IngestSettings, stop: Any) -> None:
    logging.basicConfig(level=logging.WARNING)
    hub = HubSubscriber(broker, ingest).start()
    stop.wait(MAX_PHASE_S * 6)
    hub.stop()


def _random_message(unit: str, call_share: float, rng: random.Random) -> Message:
    if rng.random() < call_share:
        return CallSummary(unit, call_id=rng.randrange(1, 10**9), started=utc_now(), number="+8131234" + f"{rng.randrange(10**4):04d}",
                           category=Category.DOMESTIC, action=rng.choice(list(Action)),
                           outcome=rng.choice([None, CallOutcome.CONNECTED, CallOutcome.CALLER_HUNG_UP]),
                           verdict=rng.choice([None, Verdict.CLEAN, Verdict.FRAUD]), excerpt="もしもし、息子だけど")  # fmt: skip
    return Health(unit, line=LineHealth.OK, version="0.1.0", disk_free_mb=20000, uptime_s=rng.randrange(10**6))


def _stored(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM calls) + (SELECT count(*) FROM health)").fetchone()
    return int(row[0]) if row else 0


def _latency(dsn: str, since: str) -> tuple[float | None, float | None]:
    sql = ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)"
           " FROM (SELECT extract(epoch FROM received - sent) * 1000 AS ms FROM calls WHERE sent >= %s"
           " UNION ALL SELECT extract(epoch FROM received - sent) * 1000 FROM health WHERE sent >= %s) t")
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, (since, since)).fetchone()  # type: ignore[arg-type]
    if not row or row[0] is None:
        return None, None
    return round(float(row[0]), 1), round(float(row[1]), 1)


def run_simulation(plan: SimulationPlan, workdir: Path) -> dict[str, Any]:
    """Start a broker, PostgreSQL and the hub under ``workdir``, drive ``plan.units`` units, report."""
    if not 1 <= plan.units <= MAX_UNITS:
        raise ValueError(f"--units must be 1..{MAX_UNITS}")
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if plan.units + 200 > hard:
        raise ValueError(f"open-file limit {hard} is too low for {plan.units} units (raise ulimit -n)")
    rng = random.Random(16)
    units = [(f"sim-{i:05d}", f"pw{rng.getrandbits(64):016x}") for i in range(plan.units)]
    hub_password = f"hub{rng.getrandbits(64):016x}"
    workdir.mkdir(parents=True, exist_ok=True)
    from .servers import _raise_nofile

    _raise_nofile()
    broker = MosquittoBroker(workdir / "broker", _free_port(), {HUB_USER: hub_password, **dict(units)})
    cluster = PostgresCluster(workdir / "pg", _free_port())
    results: dict[str, Any] = {"units": plan.units, "started": iso_utc(utc_now()), "cpus": os.cpu_count(),
                               "phases": []}  # fmt: skip
    with broker, cluster:
        dsn = cluster.create_database("hub")
        assert broker.tls is not None and broker.process is not None
        broker_settings = BrokerSettings("localhost", broker.port, broker.tls.ca, HUB_USER, hub_password)
        stop = multiprocessing.get_context("spawn").Event()
        hub = multiprocessing.get_context("spawn").Process(
            target=_run_hub, args=(broker_settings, IngestSettings(dsn, workdir / "spool"), stop), daemon=True)
        hub.start()
        wait_for_port(broker.port)
        time.sleep(3.0)  # the hub connects and subscribes before the storm
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        meter = Meter({"broker": broker.process.pid, "hub": hub.pid or 0, "postgresql": postmaster,
                       "simulator": os.getpid()})  # fmt: skip
        swarm = UnitSwarm(units, broker.port, broker.tls.ca)
        try:
            results["phases"].append(_storm(swarm, plan, meter, dsn))
            hourly = CALLS_PER_UNIT_HOUR + HEALTH_PER_UNIT_HOUR
            call_share = CALLS_PER_UNIT_HOUR / hourly
            for name, rate in (("steady", plan.units * hourly / 3600), ("steady_10x", 10 * plan.units * hourly / 3600),
                               ("burst", None)):  # fmt: skip
                seconds = plan.burst_s if rate is None else plan.steady_s
                results["phases"].append(_steady(swarm, name, rate, seconds, call_share, meter, dsn, rng))
        finally:
            swarm.close()
            stop.set()
            hub.join(30)
    results["finished"] = iso_utc(utc_now())
    return results


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _online(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM units WHERE online").fetchone()
    return int(row[0]) if row else 0


def _storm(swarm: UnitSwarm, plan: SimulationPlan, meter: Meter, dsn: str) -> dict[str, Any]:
    meter.begin()
    start = time.monotonic()
    deadline = start + min(plan.storm_timeout_s, MAX_PHASE_S)
    swarm.connect_all(deadline)
    while len(swarm.connected) < len(swarm.clients) and time.monotonic() < deadline:
        swarm.pump(0.05)
        meter.tick()
    connected_s = time.monotonic() - start
    online = 0
    while time.monotonic() < deadline:
        swarm.pump(0.05)
        if (online := _online(dsn)) >= len(swarm.connected):
            break
        meter.tick()
    seconds = time.monotonic() - start
    cpu, rss = meter.end(seconds)
    log.info("storm: %d connected in %.1f s, %d online in the database after %.1f s", len(swarm.connected),
             connected_s, online, seconds)  # fmt: skip
    return {"name": "connect_storm", "connected": len(swarm.connected), "all_connected_s": round(connected_s, 2),
            "online_in_db": online, "all_online_in_db_s": round(seconds, 2), "cpu_percent": cpu, "peak_rss_mb": rss,
            "load_average": round(os.getloadavg()[0], 1)}


def _steady(swarm: UnitSwarm, name: str, rate: float | None, seconds: float, call_share: float, meter: Meter,
            dsn: str, rng: random.Random) -> dict[str, Any]:
    """Publish at ``rate`` messages/s (None: as fast as the loop can) for ``seconds``; then drain."""
    before = _stored(dsn)
    since = iso_utc(utc_now())
    published_before = swarm.published
    meter.begin()
    start = time.monotonic()
    owed = 0.0
    last = start
    last_misc = start
    while (now := time.monotonic()) < start + seconds:
        owed += (rate if rate is not None else 5000.0) * (now - last)
        last = now
        for _ in range(min(int(owed), 2000)):
            client = rng.choice(swarm.clients)
            unit = client._client_id.decode()
            if unit in swarm.connected:
                swarm.publish(client, unit, _random_message(unit, call_share, rng))
        owed -= int(owed)
        swarm.pump(0.01)
        if now - last_misc > 1.0:
            swarm.misc()
            meter.tick()
            last_misc = now
    published = swarm.published - published_before
    drain_deadline = time.monotonic() + 120
    while _stored(dsn) - before < published and time.monotonic() < drain_deadline:
        swarm.pump(0.1)
        meter.tick()
    elapsed = time.monotonic() - start
    stored = _stored(dsn) - before
    cpu, rss = meter.end(elapsed)
    p50, p99 = _latency(dsn, since)
    per_message = {k: round(v / 100 * elapsed * 1000 / max(stored, 1), 3) for k, v in cpu.items()}
    result = PhaseResult(name, round(elapsed, 2), published, stored, round(published / seconds, 1),
                         round(stored / elapsed, 1), p50, p99, cpu, rss, per_message,
                         round(os.getloadavg()[0], 1))  # fmt: skip
    log.info("%s: %s", name, result)
    return asdict(result)


def simulate_main(units: int, output: Path | None, steady_s: float, burst_s: float) -> dict[str, Any]:
    # SIGTERM unwinds like Ctrl-C, so the broker, PostgreSQL and the hub it started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="mamoru-sim-"))
    workdir.chmod(0o755)
    try:
        results = run_simulation(SimulationPlan(units, steady_s=steady_s, burst_s=burst_s), workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if output is not None:
        output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return results
