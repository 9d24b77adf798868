"""Three hosts made of Linux network namespaces, for the partition tests: the primary's (``a``),
the standby's (``b``) and the services' (``svc``: Redis, PostgreSQL and the paper venue in it).

Each host has one veth link to the services' namespace; Redis and PostgreSQL listen on two
addresses of the services' loopback, so that a partition can cut one service and not the other.
The test process reaches the services through a control link of its own, which no partition
touches. Every address is in one private /24 (10.213.k.0/24, k picked unused per run), and
exists only on interfaces these namespaces hold. Partitions are nftables rules that silently
drop a host's packets in both directions (a cable pulled, not a refused connection); delay
needs the kernel's ``sch_netem``.

Layout of 10.213.k.0/24: .1 Redis, .2 PostgreSQL (services' loopback); .8/30 the control link
(.9 here, .10 services), .16/30 host ``a`` (.17, .18 services), .24/30 host ``b`` (.25, .26).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
import uuid

from live_cluster import require

LINKS = {"root": 8, "a": 16, "b": 24}  # the /30 of each host's link to the services
SERVICES = ("redis", "store")


def run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()[-300:]}")
    return done


def unused_octet() -> int:
    """A third octet k with no 10.213.k.* address or route on this host yet."""
    seen = run("ip", "-4", "addr").stdout + run("ip", "-4", "route").stdout
    free = [k for k in range(1, 255) if f"10.213.{k}." not in seen]
    if not free:
        raise RuntimeError("no free 10.213.k.0/24 for the test's namespaces")
    return random.choice(free)


def namespace_problem() -> str | None:
    """Why this machine cannot build the hosts (None if it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (Debian: iproute2, nftables)"
    probe = f"qs-probe-{uuid.uuid4().hex[:8]}"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    try:
        nft = run("ip", "netns", "exec", probe, "nft", "add", "table", "inet", "qs", check=False)
        if nft.returncode != 0:
            return f"nftables unusable in a namespace: {nft.stderr.strip()}"
    finally:
        run("ip", "netns", "del", probe, check=False)
    return None


class Hosts:
    """The namespaces ``qs-{a,b,svc}-<suffix>``, their links, and the partitions between them.

    Build with :meth:`create` (which skips, or fails on CI, where namespaces cannot be made);
    :meth:`close` removes everything it made, also after a partial build.
    """

    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:6]
        self.ns = {h: f"qs-{h}-{self.suffix}" for h in ("a", "b", "svc")}
        self.base = f"10.213.{unused_octet()}"
        self.ip = {"redis": f"{self.base}.1", "store": f"{self.base}.2"}
        self.cuts: dict[str, set[str]] = {"a": set(), "b": set()}
        self._made: list[str] = []
        self._delayed: list[tuple[str, str]] = []
        self._flapper: threading.Thread | None = None
        self._stop_flapping = threading.Event()

    @classmethod
    def create(cls) -> Hosts:
        problem = namespace_problem()
        if problem:
            require("network namespaces", problem)
        hosts = cls()
        try:
            hosts._build()
        except BaseException:
            hosts.close()
            raise
        return hosts

    def link(self, host: str) -> tuple[str, str]:
        """The veth names of ``host``'s link: (its end, the services' end)."""
        return f"qs{host[0]}{self.suffix}", f"qs{host[0]}{self.suffix}s"

    def _addr(self, host: str, offset: int) -> str:
        return f"{self.base}.{LINKS[host] + offset}"

    def host_addr(self, host: str) -> str:
        return self._addr(host, 1)

    def _build(self) -> None:
        svc = self.ns["svc"]
        for name in self.ns.values():
            run("ip", "netns", "add", name)
            self._made.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        for service in SERVICES:
            run("ip", "-n", svc, "addr", "add", f"{self.ip[service]}/32", "dev", "lo")
        for host in LINKS:
            end, far = self.link(host)
            here = [] if host == "root" else ["-n", self.ns[host]]
            run("ip", *here, "link", "add", end, "type", "veth", "peer", "name", far, "netns", svc)
            run("ip", *here, "addr", "add", f"{self._addr(host, 1)}/30", "dev", end)
            run("ip", "-n", svc, "addr", "add", f"{self._addr(host, 2)}/30", "dev", far)
            run("ip", *here, "link", "set", end, "up")
            run("ip", "-n", svc, "link", "set", far, "up")
            run("ip", *here, "route", "add", f"{self.base}.0/29", "via", self._addr(host, 2))
        for name in (self.ns["a"], self.ns["b"], svc):
            run("ip", "netns", "exec", name, "nft", "-f", "-", stdin=(
                "table inet qs {\n chain input {\n type filter hook input priority 0;\n }\n}\n"
            ))  # fmt: skip

    # ----------------------------------------------------------------------- partitions
    def cut(self, host: str, *services: str) -> int:
        """Drop every packet between ``host`` and ``services`` (default: all), both ways;
        return the time (ns)."""
        self.cuts[host] |= set(services or SERVICES)
        self._apply()
        return time.time_ns()

    def heal(self, host: str | None = None) -> int:
        """Lift the cuts of ``host`` (default: every host); return the time (ns)."""
        for name in [host] if host else list(self.cuts):
            self.cuts[name] = set()
        self._apply()
        return time.time_ns()

    def _apply(self) -> None:
        """Replace the drop rules: at each host for the services' replies, at the services for
        the host's packets (so no SYN or request gets through, and no answer comes back)."""
        svc_rules = []
        for host, services in self.cuts.items():
            rules = [f"add rule inet qs input ip saddr {self.ip[s]} drop" for s in sorted(services)]
            self._nft(self.ns[host], rules)
            svc_rules += [
                f"add rule inet qs input ip saddr {self.host_addr(host)} ip daddr {self.ip[s]} drop"
                for s in sorted(services)
            ]
        self._nft(self.ns["svc"], svc_rules)

    def _nft(self, namespace: str, rules: list[str]) -> None:
        script = "\n".join(["flush chain inet qs input", *rules]) + "\n"
        run("ip", "netns", "exec", namespace, "nft", "-f", "-", stdin=script)

    def flap(self, host: str, period_s: float, duration_s: float) -> None:
        """Cut and heal ``host`` from every service, alternating each ``period_s``, for
        ``duration_s``, in the background (it ends healed; :meth:`close` stops it)."""

        def toggle() -> None:
            give_up, down = time.monotonic() + duration_s, True
            while time.monotonic() < give_up and not self._stop_flapping.is_set():
                self.cut(host) if down else self.heal(host)
                down = not down
                self._stop_flapping.wait(period_s)
            self.heal(host)

        self._flapper = threading.Thread(target=toggle, daemon=True)
        self._flapper.start()

    def wait_flapping(self, timeout_s: float) -> None:
        assert self._flapper is not None
        self._flapper.join(timeout_s)
        assert not self._flapper.is_alive(), "the flapping link did not settle"

    def delay(self, host: str, delay_ms: int) -> None:
        """Delay every packet on ``host``'s link by ``delay_ms`` each way (``tc netem``)."""
        end, far = self.link(host)
        for namespace, dev in ((self.ns[host], end), (self.ns["svc"], far)):
            added = run("ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", dev,
                        "root", "netem", "delay", f"{delay_ms}ms", check=False)  # fmt: skip
            if added.returncode != 0:
                require("tc netem (the kernel's sch_netem)", added.stderr.strip())
            self._delayed.append((namespace, dev))

    def undelay(self) -> int:
        """Remove the delays; return the time (ns)."""
        for namespace, dev in self._delayed:
            run("ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev", dev, "root",
                check=False)  # fmt: skip
        self._delayed.clear()
        return time.time_ns()

    def close(self) -> None:
        """Remove the namespaces (with their links, rules and qdiscs) and the control link."""
        self._stop_flapping.set()
        if self._flapper is not None:
            self._flapper.join(10)
        run("ip", "link", "del", self.link("root")[0], check=False)
        for name in reversed(self._made):
            run("ip", "netns", "del", name, check=False)
        self._made.clear()
