"""ZeroMQ CURVE for runs that span nodes: per-run keys, authenticated peers, counted refusals.

On one machine every endpoint binds loopback and needs no keys. Once a run spans nodes its
endpoints bind the node's own address, where anyone on the network could connect and feed
the driver results or read the weights; then every socket speaks CURVE (encrypted, and
the server knows who is talking):

- `RunKeys.generate()` in the driver makes one server key pair (the dispatchers and the
  weight publisher) and one client key pair (every worker). They travel to the actors as
  Ray actor arguments and live only in memory: nothing writes them to disk.
- `serve(sock, keys, rejected)` makes a bound socket a CURVE server. A `Gatekeeper` per
  ZeroMQ context answers the ZAP requests: only the run's client key is let in. Every
  refused handshake (no CURVE at all, a wrong server key, a wrong client key) is counted in
  the socket's RejectCounter as `unauthenticated`, read from the socket's monitor.
- `connect(sock, keys)` makes a connecting socket a CURVE client of the run.

Why one client key for all workers rather than one each: workers come and go at runtime
(`peirce scale`, replacements); the driver would have to hand out and revoke keys as they
do. The threat is a peer outside the run, and one shared key keeps it out.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

import msgspec
import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from peirce.transport.frames import FrameError, RejectCounter

log = logging.getLogger(__name__)

ZAP_DOMAIN = b"peirce"
_REFUSED_EVENTS = {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no detail", zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
                   zmq.EVENT_HANDSHAKE_FAILED_AUTH: "authentication"}


class RunKeys(msgspec.Struct, frozen=True, kw_only=True):
    """One run's CURVE keys (Z85 text). A worker's copy has no `server_secret`."""

    server_public: bytes
    client_public: bytes
    client_secret: bytes
    server_secret: bytes = b""

    @classmethod
    def generate(cls) -> RunKeys:
        if not zmq.has("curve"):
            raise RuntimeError("this libzmq was built without CURVE; a multi-node run cannot authenticate its peers")
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(server_public=server_public, server_secret=server_secret, client_public=client_public,
                   client_secret=client_secret)

    def for_worker(self) -> RunKeys:
        """The keys a connecting peer needs: the server's public key and the client pair."""
        return msgspec.structs.replace(self, server_secret=b"")

    def __repr__(self) -> str:  # never print a secret into a log
        return f"RunKeys(server_public={self.server_public.decode()!r}, client_public={self.client_public.decode()!r})"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(sock: zmq.Socket, keys: RunKeys | None, rejected: RejectCounter) -> None:
    """Make `sock` (not yet bound) a CURVE server of the run; no-op without keys."""
    if keys is None:
        return
    if not keys.server_secret:
        raise ValueError("serve: these keys have no server secret (a worker's copy); the driver's or learner's are needed")
    sock.curve_server = True
    sock.curve_secretkey = keys.server_secret
    sock.curve_publickey = keys.server_public
    sock.zap_domain = ZAP_DOMAIN
    Gatekeeper.of(sock.context, keys).watch(sock, rejected)


def connect(sock: zmq.Socket, keys: RunKeys | None) -> None:
    """Make `sock` (not yet connected) a CURVE client of the run; no-op without keys."""
    if keys is None:
        return
    sock.curve_serverkey = keys.server_public
    sock.curve_publickey = keys.client_public
    sock.curve_secretkey = keys.client_secret


class Gatekeeper:
    """The ZAP handler and handshake watcher of one ZeroMQ context (one per process here).

    One thread: it answers ZAP requests (let in only the run's client key) and reads the
    monitor of every watched server socket, counting each refused handshake."""

    _by_context: dict[int, Gatekeeper] = {}
    _lock = threading.Lock()

    @classmethod
    def of(cls, ctx: zmq.Context, keys: RunKeys) -> Gatekeeper:
        with cls._lock:
            keeper = cls._by_context.get(id(ctx))
            if keeper is None:
                keeper = cls._by_context[id(ctx)] = cls(ctx, keys)
            elif keeper.allowed != keys.client_public:
                raise ValueError("a second run's keys in one process: one Gatekeeper serves one run's client key")
            return keeper

    def __init__(self, ctx: zmq.Context, keys: RunKeys) -> None:
        self.ctx, self.allowed = ctx, keys.client_public
        self.refused = 0
        self._zap = ctx.socket(zmq.REP)
        self._zap.linger = 0
        self._zap.bind("inproc://zeromq.zap.01")
        self._watched: list[tuple[zmq.Socket, RejectCounter]] = []
        self._pending: list[tuple[zmq.Socket, RejectCounter]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peirce-gatekeeper", daemon=True)
        self._thread.start()

    def watch(self, sock: zmq.Socket, rejected: RejectCounter) -> None:
        """Count `sock`'s refused handshakes in `rejected` (call from the socket's owner, before bind)."""
        monitor = sock.get_monitor_socket(sum(_REFUSED_EVENTS))
        with self._lock:
            self._pending.append((monitor, rejected))

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        while not self._stop.is_set():
            with self._lock:
                for monitor, counter in self._pending:
                    poller.register(monitor, zmq.POLLIN)
                    self._watched.append((monitor, counter))
                self._pending.clear()
            for sock, _ in poller.poll(100):
                if sock is self._zap:
                    self._answer(self._zap.recv_multipart())
                else:
                    self._on_monitor(sock)

    def _answer(self, request: list[bytes]) -> None:
        """ZAP/1.0: [version, request id, domain, address, identity, mechanism, *credentials]."""
        if len(request) < 6:
            return self._zap.send_multipart([b"1.0", request[1] if len(request) > 1 else b"", b"500",
                                             b"malformed ZAP request", b"", b""])
        version, request_id, _domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        ok = mechanism == b"CURVE" and len(credentials) == 1 and z85.encode(credentials[0]) == self.allowed
        if not ok:
            log.warning("refused a %s peer from %s: not this run's client key", mechanism.decode(errors="replace"),
                        address.decode(errors="replace"))
        status, text = (b"200", b"OK") if ok else (b"400", b"not this run's key")
        self._zap.send_multipart([version, request_id, status, text, b"", b""])

    def _on_monitor(self, monitor: zmq.Socket) -> None:
        try:
            event = recv_monitor_message(monitor)
        except zmq.ZMQError:
            return
        kind = _REFUSED_EVENTS.get(event["event"])
        if kind is None:
            return
        self.refused += 1
        counter = next((c for m, c in self._watched if m is monitor), None)
        if counter is not None:
            counter.record(FrameError("unauthenticated", f"{kind} handshake failure from a peer of "
                                                         f"{event.get('endpoint', b'?')!r}"))
