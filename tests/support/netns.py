"""Run a real client in a network namespace of its own that holds only loopback, with one TCP port bridged
through to the same port on the test's side, so that the client can reach the server under test and nothing
else: not the internet, not a name server, not another port on this machine.

Why a namespace: Codex CLI and Claude Code are native binaries, which node's --require hooks
(tests/clients/loopback_only.cjs) cannot see into; Codex looks up chatgpt.com and github.com even with its
analytics off. In a fresh namespace those lookups and connections fail at once, inside the machine.

Why a Unix socket: a socket file is reachable from every network namespace, so it carries the one port across.
On the test's side `isolated_client` forwards connections from the socket file to 127.0.0.1:<port>; inside,
this file run as a script (`python netns.py inside …`) brings loopback up, listens on 127.0.0.1:<port>, forwards
each connection to the socket file and then runs the client. The port number is the same on both sides, so a
URL such as http://127.0.0.1:<port>/v1 means the same server inside and out.

The namespace is made by util-linux `unshare` (root: `unshare --net`; otherwise a user namespace with
`unshare --user --map-root-user --net`), with a PID namespace too, so that when the client is stopped every
process it started (Codex runs its commands in a PTY, in sessions of their own) goes with it.

Pure standard library: the inside half is run by the same Python without the test's packages.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

_CHUNK = 65536


class Finished(NamedTuple):
    """How a client run ended: its exit code and everything it printed (decoded as UTF-8, errors replaced)."""
    rc: int
    stdout: str
    stderr: str


class NamespaceUnavailable(RuntimeError):
    """This machine cannot make an isolated network namespace (no `unshare`, or not allowed to use it)."""


def unshare_command() -> list[str]:
    """The `unshare` prefix for this user: a new network and PID namespace whose first process is killed when
    `unshare` itself is (--kill-child), and /proc remounted to match the PID namespace."""
    exe = shutil.which("unshare")
    if exe is None:
        raise NamespaceUnavailable("util-linux `unshare` is not installed")
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [exe, *user, "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]


def namespace_problem() -> str | None:
    """None if a namespace can be made here, else why not (for a skip, or a failure under CI)."""
    try:
        argv = unshare_command()
    except NamespaceUnavailable as e:
        return str(e)
    try:
        done = subprocess.run([*argv, sys.executable, "-I", __file__, "check"], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`unshare` failed: {e}"
    if done.returncode != 0 or done.stdout.strip() != "ok":
        return f"`unshare` failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}"
    return None


# -- forwarding ------------------------------------------------------------------------------------------------

def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy one direction until its end closes, then pass the half-close on (HTTP clients may rely on it)."""
    try:
        while data := src.recv(_CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Both directions between two connected sockets; both are closed when both directions have ended."""
    there = threading.Thread(target=_pump, args=(a, b), daemon=True)
    there.start()
    _pump(b, a)
    there.join()
    a.close()
    b.close()


class _Forwarder:
    """Accepts on `listener` and splices each connection to a fresh one to `address` (a thread each)."""

    def __init__(self, listener: socket.socket, address: object, family: int) -> None:
        self.listener = listener
        self.address = address
        self.family = family
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # the listener was closed
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        onward = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            onward.connect(self.address)  # type: ignore[arg-type]
        except OSError:
            conn.close()
            onward.close()
            return
        with self.lock:
            self.open.update((conn, onward))
        _splice(conn, onward)
        with self.lock:
            self.open.difference_update((conn, onward))

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(10)
        with self.lock:
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _tcp_to_unix(port: int, path: str) -> list[_Forwarder]:
    """Inside the namespace: 127.0.0.1:port (and [::1]:port where IPv6 is on) → the socket file."""
    forwarders = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
        except OSError:
            listener.close()
            if family == socket.AF_INET:
                raise
            continue  # no IPv6 in this namespace: 127.0.0.1 is enough
        listener.listen(64)
        forwarders.append(_Forwarder(listener, path, socket.AF_UNIX))
    return forwarders


def _loopback_up() -> None:
    """`ip link set lo up`, by the ioctl it makes (a new namespace starts with its loopback down)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    layout = "16sH22x"  # struct ifreq: the name, then the flags at the start of a 24-byte union
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        _, flags = struct.unpack(layout, fcntl.ioctl(s, siocgifflags, struct.pack(layout, b"lo", 0)))
        fcntl.ioctl(s, siocsifflags, struct.pack(layout, b"lo", flags | iff_up))


# -- the test's side -------------------------------------------------------------------------------------------

class Started:
    """A client running in its namespace. `wait` collects it; `stop` ends it and everything it started."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, sink), daemon=True)
                         for stream, sink in ((proc.stdout, self.out), (proc.stderr, self.err))]
        for r in self._readers:
            r.start()

    @staticmethod
    def _read(stream: object, sink: list[bytes]) -> None:
        assert hasattr(stream, "read1")
        with stream:  # type: ignore[attr-defined]
            while chunk := stream.read1(_CHUNK):
                sink.append(chunk)

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Kill the namespace's first process (`unshare` passes the kill on): the kernel ends the rest."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)

    def wait(self, timeout: float) -> Finished:
        """Wait for the client to exit; past `timeout` (a safety net, only so a hang fails) it is stopped and
        TimeoutError is raised with what it printed so far."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            self.proc.wait(30)
            for r in self._readers:
                r.join(30)
            raise TimeoutError(f"the client ran past {timeout} s and was stopped:\n{self._text(self.out)}\n"
                               f"{self._text(self.err)}") from None
        for r in self._readers:
            r.join(30)
        return Finished(rc, self._text(self.out), self._text(self.err))

    @staticmethod
    def _text(chunks: list[bytes]) -> str:
        return b"".join(chunks).decode("utf-8", "replace")


class Isolated:
    """What `isolated_client` yields: `start` a client in a fresh namespace, or `run` one to its end.
    Calling the object itself is `run`."""

    def __init__(self, port: int, socket_path: str, prefix: list[str]) -> None:
        self.port = port
        self.socket_path = socket_path
        self.prefix = prefix
        self.started: list[Started] = []

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike[str]) -> Started:
        """Start `argv` (argv[0] found on env's PATH, or a path) in a new namespace, with exactly `env`, in
        `cwd`, stdin empty."""
        exe = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
        if exe is None:
            raise FileNotFoundError(f"{argv[0]} is not on the client's PATH")
        inside = [sys.executable, "-I", __file__, "inside", str(self.port), self.socket_path, "--", exe,
                  *argv[1:]]
        proc = subprocess.Popen([*self.prefix, *inside], env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started = Started(proc)
        self.started.append(started)
        return started

    def run(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike[str],
            timeout: float) -> Finished:
        """Run `argv` to its end (see `start`); → Finished(rc, stdout, stderr)."""
        return self.start(argv, env, cwd).wait(timeout)

    __call__ = run


@contextmanager
def isolated_client(target_port: int, host: str = "127.0.0.1") -> Iterator[Isolated]:
    """Bridge `host:target_port` into namespaces made for clients; on exit every client still running is
    stopped and the bridge closed. Raises NamespaceUnavailable if `unshare` is missing."""
    prefix = unshare_command()
    with tempfile.TemporaryDirectory(prefix="keyloom-netns-") as tmp:
        path = str(Path(tmp) / "bridge.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o777)  # under --map-root-user the client is root in name only
        listener.listen(64)
        bridge = _Forwarder(listener, (host, target_port), socket.AF_INET)
        isolated = Isolated(target_port, path, prefix)
        try:
            yield isolated
        finally:
            for started in isolated.started:
                started.stop()
                started.proc.wait(30)
            bridge.close()


# -- the namespace's side --------------------------------------------------------------------------------------

def _inside(port: int, path: str, argv: list[str]) -> int:
    _loopback_up()
    _tcp_to_unix(port, path)  # listening before the client starts: its first connection finds the port
    try:
        return subprocess.run(argv).returncode
    except FileNotFoundError as e:
        print(f"netns: {e}", file=sys.stderr)
        return 127


def main(args: list[str]) -> int:
    if args == ["check"]:  # namespace_problem(): can loopback come up, and is the outside unreachable?
        _loopback_up()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
        print("ok")
        return 0
    if len(args) >= 4 and args[0] == "inside" and args[3] == "--":
        return _inside(int(args[1]), args[2], args[4:])
    print("usage: netns.py check | inside PORT SOCKET -- ARGV…", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
