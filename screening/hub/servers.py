"""The hub's two servers as Debian ships them: Mosquitto (the broker) and PostgreSQL, run in a
directory of our own. Used by ``mamoru hub servers`` (a town or a demo) and by the tests.

Mosquitto gets a generated config: TLS only (a local CA made with ``cryptography``), no anonymous
clients, per-unit passwords (``mosquitto_passwd -U``), an ACL from ``screening.hubwire`` so a unit
only reaches ``mamoru/v1/<its id>/``, and on-disk persistence so QoS 1 survives a broker restart.
PostgreSQL gets its own cluster (``initdb``/``pg_ctl``); PostgreSQL refuses to run as root, so as
root the cluster belongs to ``nobody`` (run with ``runuser``) and lives under a world-traversable
temp dir. At prefecture scale both are replaced by managed services (docs/hub.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from screening.core.files import atomic_write_text
from screening.hubwire import PREFIX, Channel, home_assistant_acl_lines, unit_acl_lines

log = logging.getLogger(__name__)

HUB_USER = "hub_service"  # '_' cannot occur in a unit id, so the hub's user never matches a unit's ACL
MOSQUITTO = Path("/usr/sbin/mosquitto")
START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path, host: str = "localhost") -> TlsFiles:
    """A CA and a server certificate for ``host`` and 127.0.0.1 (EC P-256, valid 30 days)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mamoru hub test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    alt = x509.SubjectAlternativeName([x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(alt, critical=False).sign(ca_key, hashes.SHA256()))  # fmt: skip
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    atomic_write_text(files.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()).decode(), mode=0o600)  # fmt: skip
    return files


def wait_for_port(port: int, timeout_s: float = START_TIMEOUT_S, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s:.0f} s")


def _raise_nofile() -> None:
    """Thousands of units are thousands of sockets: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class MosquittoBroker:
    """A Mosquitto on ``127.0.0.1:port`` configured for mamoru; ``users`` maps user name -> password."""

    directory: Path
    port: int
    users: dict[str, str] = field(default_factory=dict)
    max_queued: int = 200_000  # per client session: a hub away for 10 minutes must not lose messages
    tls: TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        if self.tls is None:
            self.tls = make_tls(self.directory / "tls")
        self.write_passwords()
        hub_lines = [f"user {HUB_USER}"]
        hub_lines += [f"topic read {PREFIX}/+/{c.value}" for c in Channel if c.from_unit]
        hub_lines.append(f"topic write {PREFIX}/+/{Channel.COMMANDS.value}")
        # What units publish for Home Assistant: the hub's account reads it too (a family hub's Home
        # Assistant may use a copy of these two read lines under its own user).
        hub_lines += [f"topic read {PREFIX}/+/ha", "topic read homeassistant/#"]
        # `pattern` lines apply to every user, wherever they stand; `%u` keeps each unit under its own id.
        unit_lines = [*unit_acl_lines(), *home_assistant_acl_lines()]
        atomic_write_text(self.directory / "acl", "\n".join([*unit_lines, "", *hub_lines]) + "\n")
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.directory / 'passwd'}",
            f"acl_file {self.directory / 'acl'}",
            "persistence true",
            f"persistence_location {self.directory / 'data'}/",
            "autosave_interval 1",
            f"max_queued_messages {self.max_queued}",
            "max_inflight_messages 1000",
            "message_size_limit 3200000",
            "set_tcp_nodelay true",
            f"log_dest file {self.directory / 'mosquitto.log'}",
            "log_type error", "log_type warning", "log_type notice",
            f"listener {self.port} 127.0.0.1",
            f"cafile {self.tls.ca}", f"certfile {self.tls.cert}", f"keyfile {self.tls.key}",
            "tls_version tlsv1.2",
        ]  # fmt: skip
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # files in a root-only temp dir; a real install uses the mosquitto user
        atomic_write_text(self.config_path, "\n".join(lines) + "\n")

    def write_passwords(self) -> None:
        """Hash every user's password with Mosquitto's own tool (one process for all of them)."""
        path = self.directory / "passwd"
        atomic_write_text(path, "".join(f"{u}:{p}\n" for u, p in self.users.items()), mode=0o600)
        subprocess.run(["mosquitto_passwd", "-U", str(path)], check=True, capture_output=True, timeout=600)

    def start(self) -> MosquittoBroker:
        self.write_config()
        log_file = (self.directory / "stderr.log").open("ab")
        self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config_path)], stdout=log_file,
                                        stderr=subprocess.STDOUT, preexec_fn=_raise_nofile)  # fmt: skip
        log_file.close()
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {(self.directory / 'stderr.log').read_text()[-2000:]}")
        return self

    def reload_users(self) -> None:
        """New units: rewrite the password file and have the broker re-read it (SIGHUP)."""
        self.write_passwords()
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return versions[-1].parent


@dataclass
class PostgresCluster:
    """A private PostgreSQL cluster on ``127.0.0.1:port``; trust auth on loopback (tests and demos only)."""

    directory: Path
    port: int
    running: bool = False

    def _as_owner(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "nobody", "--", *argv]
        return list(argv)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self.directory.chmod(0o755)
            shutil.chown(self.directory, "nobody", "nogroup")
            blocked = [p for p in self.directory.parents if not p.stat().st_mode & 0o001]
            if blocked:
                raise RuntimeError(f"{blocked[0]} is not traversable by others: PostgreSQL runs as nobody under root")
        result = subprocess.run(self._as_owner(str(_postgres_bin() / "initdb"), "-D", str(self.data), "-U", "postgres",
                                               "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"),
                                capture_output=True, timeout=120)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> PostgresCluster:
        self.init()
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c max_connections=200"
        result = subprocess.run(self._as_owner(str(_postgres_bin() / "pg_ctl"), "-D", str(self.data), "-o", options,
                                               "-l", str(self.directory / "postgres.log"), "-w", "-t", "60", "start"),
                                capture_output=True, timeout=90)  # fmt: skip
        if result.returncode != 0:
            log_text = (self.directory / "postgres.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr.decode(errors='replace')} {log_text}")
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if not self.running:
            return
        subprocess.run(self._as_owner(str(_postgres_bin() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                                      "stop"), capture_output=True, timeout=90)  # fmt: skip
        self.running = False

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database} connect_timeout=5"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name comes from our code, never from input
        return self.dsn(name)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
