"""A second "host" on this machine, for the fault tests and benchmark: a network namespace with its
own address and, for the programs started in it, its own host name (a UTS namespace).

A veth pair links it to the main namespace: the main host has `main_address` on its end (the
native stack binds it through `BIND_ADDRESS`), the second host `address` on the other. Files are
shared as on one machine: the data folder is the same folder, as the same path mounted on every
worker host is in production (docs/production.md). Needs root (`ip netns`).
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import subprocess
from dataclasses import dataclass

from stack.run import StackError


@dataclass(frozen=True)
class SecondHost:
    """One network namespace linked to the main one by a veth pair."""

    netns: str
    hostname: str
    main_address: str
    address: str
    main_link: str
    host_link: str

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the second host: its network namespace and a UTS namespace whose host
        name is `hostname` (what `socket.gethostname()` and Celery's `%h` say there)."""
        script = f"hostname {shlex.quote(self.hostname)} && exec \"$@\""
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--", "sh", "-c", script, "sh", *argv]


def for_offset(offset: int) -> SecondHost:
    """The second host of a test stack whose ports are shifted by `offset` (distinct per checkout):
    10.77.<n>.1 on the main side, 10.77.<n>.2 inside, interface names from the offset."""
    n = offset // 100 % 250 + 1
    tag = f"{offset % 100000}"
    return SecondHost(netns=f"mlops-h2-{tag}", hostname=f"mlops-host2-{tag}", main_address=f"10.77.{n}.1",
                      address=f"10.77.{n}.2", main_link=f"mlh2m{tag}"[:15], host_link=f"mlh2h{tag}"[:15])


def _ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()}")
    return proc


def exists(host: SecondHost) -> bool:
    """True when the namespace is there (e.g. left by an interrupted run)."""
    return host.netns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


def create(host: SecondHost) -> SecondHost:
    """Create the namespace and the veth pair with both addresses (a leftover of the same name is
    removed first); refuse when another interface of the machine already has one of the addresses."""
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        raise StackError("`ip` (iproute2) and `unshare` (util-linux) are needed for the second host")
    if exists(host):
        remove(host)
    taken = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    for address in (host.main_address, host.address):
        if f" {address}/" in taken:
            raise StackError(f"{address} is already on an interface of this machine: pick another offset")
    network = ipaddress.IPv4Interface(f"{host.main_address}/24").network
    _ip("netns", "add", host.netns)
    try:
        _ip("link", "add", host.main_link, "type", "veth", "peer", "name", host.host_link)
        _ip("link", "set", host.host_link, "netns", host.netns)
        _ip("addr", "add", f"{host.main_address}/{network.prefixlen}", "dev", host.main_link)
        _ip("link", "set", host.main_link, "up")
        _ip("link", "set", "lo", "up", netns=host.netns)
        _ip("addr", "add", f"{host.address}/{network.prefixlen}", "dev", host.host_link, netns=host.netns)
        _ip("link", "set", host.host_link, "up", netns=host.netns)
    except StackError:
        remove(host)
        raise
    return host


def remove(host: SecondHost) -> None:
    """Delete the namespace (which deletes the veth pair); nothing when it is gone already."""
    if exists(host):
        _ip("netns", "delete", host.netns)
    subprocess.run(["ip", "link", "delete", host.main_link], capture_output=True)
