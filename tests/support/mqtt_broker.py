"""A real Mosquitto broker for tests: TLS with a CA made for the test, password file, per-unit ACL.

The broker runs as a child process on a free loopback port with persistence in its own tmp dir,
so a test can stop it (as an outage) and start it again on the same port with the same sessions.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from screening.hubwire import PREFIX, Channel, unit_acl_lines
from tests.support.ports import free_tcp_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT_S = 10.0

def acl_text(hub_user: str) -> str:
    """The contract's unit ACL (``unit_acl_lines``), Home Assistant discovery under the unit's own node,
    and a hub user that reads every unit and writes commands."""
    lines = [f"user {hub_user}", f"topic read {PREFIX}/#", f"topic write {PREFIX}/+/{Channel.COMMANDS.value}",
             "topic read homeassistant/#", "", *unit_acl_lines(), f"pattern write {PREFIX}/%u/ha",
             "pattern write homeassistant/+/mamoru_%u/#"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) for 127.0.0.1 / localhost, valid for a day."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("mamoru test CA")).issuer_name(_name("mamoru test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    paths[2].chmod(0o600)
    return paths


@dataclass
class MosquittoBroker:
    """``start()``/``stop()`` as often as a test likes; the port, users and persistence stay."""

    directory: Path
    users: dict[str, str]  # user name -> password
    hub_user: str = "hub"
    port: int = field(default_factory=free_tcp_port)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _, cert, key = make_tls(self.directory)
        passwords = self.directory / "passwd"
        passwords.write_text("")
        passwords.chmod(0o600)
        for user, password in self.users.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True, timeout=30)
        (self.directory / "acl").write_text(acl_text(self.hub_user))
        (self.directory / "data").mkdir(exist_ok=True)
        (self.directory / "mosquitto.conf").write_text(
            # Run as whoever runs the tests (as root, mosquitto would switch to a user who cannot read tmp_path).
            f"user {getpass.getuser()}\nper_listener_settings false\nallow_anonymous false\npassword_file {passwords}\n"
            f"acl_file {self.directory / 'acl'}\npersistence true\npersistence_location {self.directory / 'data'}/\n"
            f"log_dest file {self.directory / 'mosquitto.log'}\nlog_type all\n"
            f"listener {self.port} 127.0.0.1\ncafile {self.ca_file}\ncertfile {cert}\nkeyfile {key}\n"
            "tls_version tlsv1.2\nmax_queued_messages 100000\n")  # fmt: skip

    def start(self) -> None:
        if not (self.directory / "mosquitto.conf").exists():
            self.prepare()
        self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.directory / "mosquitto.conf")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self._process.stderr.read().decode() if self._process.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # SIGTERM: mosquitto saves its persistence file on the way out
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._process = None

    def log_text(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


class HubListener:
    """The hub's side for tests: a real MQTT 5 client (the hub user) that records what arrives and
    can publish commands to a unit."""

    def __init__(self, broker: MosquittoBroker, *, subscribe: tuple[str, ...] = ("mamoru/v1/#", "homeassistant/#"),
                 user: str | None = None) -> None:  # fmt: skip
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.broker = broker
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retained)
        self._lock = threading.Condition()
        self._ready = threading.Event()
        name = user or broker.hub_user
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{name}-{free_tcp_port()}",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.username_pw_set(name, broker.users[name])
        self.client.tls_set(ca_certs=str(broker.ca_file))
        self.subscribe_to = subscribe

        def on_connect(client: mqtt.Client, *_: object) -> None:
            for pattern in self.subscribe_to:
                client.subscribe(pattern, qos=1)
            self._ready.set()

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
                self._lock.notify_all()

        self.client.on_connect = on_connect
        self.client.on_message = on_message

    def __enter__(self) -> HubListener:
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.loop_start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("hub listener did not connect")
        time.sleep(0.2)  # SUBACKs
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 30.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len([1 for t, _, _ in self.messages if t == topic]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{count} message(s) on {topic} not seen in {timeout} s; "
                                       f"saw {sorted({t for t, _, _ in self.messages})}")  # fmt: skip
                self._lock.wait(left)
            return [payload for t, payload, _ in self.messages if t == topic]

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
