#!/usr/bin/env python3
"""Images for docker-compose.celery.yml where no registry answers: local stand-ins.

    python3 scripts/compose/images.py                 # print VAR=image for every image to swap
    python3 scripts/compose/images.py postgres redis  # only these
    MLOPS_COMPOSE_IMAGES=standin|upstream|auto (default auto)

For each upstream image the compose file names (its default in `${VAR:-image}`), `auto` uses the
upstream image when the engine has it or can pull it, and otherwise builds a stand-in (see
scripts/compose/standins/README.md): first a bookworm root file system with `mmdebstrap
--variant=minbase` from the host's own apt sources, imported as `mlops-flights-standin/bookworm`,
then the stand-in's Dockerfile on top. Stand-ins are tagged `mlops-flights-standin/<name>:<digest>`
and handed to compose through the image variables, never under the upstream names. The root file
system is built once per engine (images stay in its data root); the Dockerfiles rebuild from the
layer cache in seconds. A stand-in's tag carries a digest of its folder and build arguments
(`mlops-flights-standin/redis:1a2b3c4d5e6f`). MLOPS_COMPOSE_NO_CACHE=1 rebuilds the root file
system and every stand-in without the layer cache (a cold build on a warm engine, for timing).
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.celery.yml"
AIRFLOW_DOCKERFILE = REPO / "airflow" / "Dockerfile"
STANDIN_DIR = Path(__file__).resolve().parent / "standins"
ROOTFS_IMAGE = "mlops-flights-standin/bookworm:local"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
PULL_TIMEOUT_S = 120
# Several resolve() calls may run at once (threads): the root file system is built only once.
_ROOTFS_LOCK = threading.Lock()
_ROOTFS_BUILT_HERE: list[bool] = []


def no_cache() -> bool:
    """MLOPS_COMPOSE_NO_CACHE=1: build everything afresh (root file system, stand-ins, project image)."""
    return os.environ.get("MLOPS_COMPOSE_NO_CACHE", "") not in ("", "0")


@dataclass(frozen=True)
class Standin:
    """A local image standing in for an upstream one: its variable and how to build it."""

    name: str
    variable: str  # the image variable of docker-compose.celery.yml (or airflow/Dockerfile's ARG)
    dockerfile_dir: str  # folder under standins/
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The stand-in's local tag: its name and a digest of its build inputs, so that two test
        runs on one engine with different stand-in files never get each other's image."""
        digest = hashlib.sha256(repr(sorted(self.build_args.items())).encode())
        folder = STANDIN_DIR / self.dockerfile_dir
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
        return f"mlops-flights-standin/{self.name}:{digest.hexdigest()[:12]}"


def _airflow_version() -> str:
    match = re.search(r"^apache-airflow==(\S+)$", (REPO / "requirements.lock").read_text(), re.M)
    if not match:
        raise SystemExit("requirements.lock pins no apache-airflow version")
    return match.group(1)


# One row per upstream image that can be replaced. A Debian-package stand-in is one more row using
# debian-binary/ (its package, binary and data folder), like the last three.
STANDINS: dict[str, Standin] = {s.name: s for s in (
    Standin("airflow-python", "AIRFLOW_BASE_IMAGE", "airflow-python",
            {"AIRFLOW_VERSION": _airflow_version(), "PIP_VERSION": "26.3"}),
    Standin("postgres", "POSTGRES_IMAGE", "postgres"),
    Standin("redis", "REDIS_IMAGE", "redis"),
    Standin("prometheus", "PROMETHEUS_IMAGE", "debian-binary",
            {"PACKAGES": "prometheus", "BINARY": "/usr/bin/prometheus", "DATA_DIR": "/prometheus"}),
    Standin("pushgateway", "PUSHGATEWAY_IMAGE", "debian-binary",
            {"PACKAGES": "prometheus-pushgateway", "BINARY": "/usr/bin/prometheus-pushgateway",
             "DATA_DIR": "/pushgateway"}),
    Standin("alertmanager", "ALERTMANAGER_IMAGE", "debian-binary",
            {"PACKAGES": "prometheus-alertmanager", "BINARY": "/usr/bin/prometheus-alertmanager",
             "DATA_DIR": "/alertmanager"}),
    Standin("postgres-exporter", "POSTGRES_EXPORTER_IMAGE", "debian-binary",
            {"PACKAGES": "prometheus-postgres-exporter", "BINARY": "/usr/bin/prometheus-postgres-exporter",
             "DATA_DIR": "/var/lib/postgres-exporter"}),
    Standin("redis-exporter", "REDIS_EXPORTER_IMAGE", "debian-binary",
            {"PACKAGES": "prometheus-redis-exporter", "BINARY": "/usr/bin/prometheus-redis-exporter",
             "DATA_DIR": "/var/lib/redis-exporter"}),
    Standin("process-exporter", "PROCESS_EXPORTER_IMAGE", "debian-binary",
            {"PACKAGES": "prometheus-process-exporter", "BINARY": "/usr/bin/prometheus-process-exporter",
             "DATA_DIR": "/var/lib/process-exporter"}),
)}


class ImageError(RuntimeError):
    """An image could not be pulled or built; the message names it and its build log."""


def upstream_image(variable: str) -> str:
    """The upstream default of `variable`: `${VAR:-image}` in the compose file, or the Dockerfile's
    `ARG VAR=image` (the base of the project image)."""
    text = COMPOSE_FILE.read_text()
    found = set(re.findall(r"\$\{" + variable + r":-([^}]+)\}", text))
    if not found:
        found = set(re.findall(r"^ARG " + variable + r"=(\S+)", AIRFLOW_DOCKERFILE.read_text(), re.M))
    if len(found) != 1:
        raise ImageError(f"{COMPOSE_FILE.name}: expected one default for ${{{variable}}}, found {sorted(found)}")
    return found.pop()


def _docker(*args: str, timeout: float | None = None, log: Path | None = None,
            stdin: int | None = None) -> subprocess.CompletedProcess:
    docker = shutil.which("docker") or "docker"
    if log is None:
        return subprocess.run([docker, *args], capture_output=True, text=True, timeout=timeout, stdin=stdin)
    with log.open("a") as out:
        return subprocess.run([docker, *args], stdout=out, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, stdin=stdin)


def has_image(image: str) -> bool:
    """True when the engine (DOCKER_HOST) has `image` locally."""
    return _docker("image", "inspect", "--format", "{{.Id}}", image).returncode == 0


def can_pull(image: str) -> bool:
    """True when `docker pull image` succeeds (no registry here: it fails within a second)."""
    try:
        return _docker("pull", "-q", image, timeout=PULL_TIMEOUT_S).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def host_apt_sources() -> list[str]:
    """One-line `deb URI SUITE COMPONENTS` entries of the host's apt sources for its own release
    (sources.list, *.list and deb822 *.sources under /etc/apt; other releases' repositories are
    left out, they would need keys the root file system lacks)."""
    codename = ""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip('"')
    if not codename:
        raise ImageError("/etc/os-release names no VERSION_CODENAME")
    entries: list[tuple[str, str, str]] = []
    apt = Path("/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if not path.is_file():
            continue
        for raw in path.read_text().splitlines():
            line = re.sub(r"\[[^]]*\]", "", raw.split("#", 1)[0]).split()
            if len(line) >= 4 and line[0] == "deb":
                entries.append((line[1], line[2], " ".join(line[3:])))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for raw in stanza.splitlines():
                if raw.startswith("#") or ":" not in raw:
                    continue
                key, value = raw.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    entries.append((uri, suite, fields.get("components", "main")))
    lines = [f"deb {uri} {suite} {components}" for uri, suite, components in entries
             if suite == codename or suite.startswith(codename + "-") or suite.startswith(codename + "/")]
    if not lines:
        raise ImageError(f"no apt source for {codename} under /etc/apt: cannot build a root file system")
    return list(dict.fromkeys(lines))


def build_rootfs(log: Path) -> None:
    """mmdebstrap a minbase bookworm (host's apt sources) straight into `docker import`."""
    if shutil.which("mmdebstrap") is None:
        subprocess.run(["bash", str(REPO / "scripts" / "system-deps.sh"), "compose"], check=True)
    suite = host_apt_sources()[0].split()[2]
    cmd = [
        "mmdebstrap", "--variant=minbase", "--quiet",
        "--aptopt=APT::Install-Recommends \"false\"",
        "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        # As in Debian's own container images: package scripts never start services in a build.
        "--customize-hook=printf '#!/bin/sh\\nexit 101\\n' > \"$1/usr/sbin/policy-rc.d\"; chmod 755 \"$1/usr/sbin/policy-rc.d\"",
        suite, "-", *host_apt_sources(),
    ]
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        debootstrap = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out)
        imported = _docker("import", "--change", 'CMD ["bash"]', "--message", "mmdebstrap minbase (host apt sources)",
                           "-", ROOTFS_IMAGE, log=log, stdin=debootstrap.stdout)
        debootstrap.stdout.close()
        rc = debootstrap.wait()
    if rc != 0 or imported.returncode != 0:
        raise ImageError(f"root file system: mmdebstrap exit {rc}, docker import exit {imported.returncode}; see {log}")


def build_standin(standin: Standin, log: Path) -> None:
    """Build one stand-in from its folder, with the host's extra CAs as the optional `ca/` input."""
    with tempfile.TemporaryDirectory(prefix=f"standin-{standin.name}-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(STANDIN_DIR / standin.dockerfile_dir, context)
        (context / "ca").mkdir()
        for cert in sorted(HOST_CA_DIR.glob("**/*.crt")) if HOST_CA_DIR.is_dir() else []:
            shutil.copy(cert, context / "ca" / cert.name)
        (context / "ca" / ".keep").touch()
        args = ["build", *(["--no-cache"] if no_cache() else []), "--tag", standin.tag, "--build-arg", f"BASE={ROOTFS_IMAGE}",
                "--label", f"org.mlops-flights.standin-for={upstream_image(standin.variable)}"]
        for key, value in standin.build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        result = _docker(*args, str(context), log=log)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise ImageError(f"stand-in {standin.name}: docker build exit {result.returncode} (log {log}):\n{tail}")


def resolve(names: list[str], log_dir: Path, mode: str | None = None,
            report: Callable[[str, float], None] | None = None) -> dict[str, str]:
    """The image variables to set for `names` (stand-ins built as needed), e.g.
    {"POSTGRES_IMAGE": "mlops-flights-standin/postgres:<digest>"}; {} when upstream images are used.
    `report(what, seconds)` is told how long each build took."""
    mode = mode or os.environ.get("MLOPS_COMPOSE_IMAGES", "auto")
    if mode not in ("auto", "standin", "upstream"):
        raise ImageError(f"MLOPS_COMPOSE_IMAGES={mode!r}: expected auto, standin or upstream")
    log_dir.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, str] = {}
    for name in names:
        standin = STANDINS[name]
        upstream = upstream_image(standin.variable)
        if mode != "standin" and (has_image(upstream) or can_pull(upstream)):
            continue
        if mode == "upstream":
            raise ImageError(f"{upstream} is neither in the engine nor pullable (MLOPS_COMPOSE_IMAGES=upstream)")
        with _ROOTFS_LOCK:
            if not has_image(ROOTFS_IMAGE) or (no_cache() and not _ROOTFS_BUILT_HERE):
                _ROOTFS_BUILT_HERE.append(True)
                started = time.monotonic()
                build_rootfs(log_dir / "rootfs.log")
                if report:
                    report("stand-in root file system (mmdebstrap + import)", time.monotonic() - started)
        started = time.monotonic()
        build_standin(standin, log_dir / f"standin-{name}.log")
        if report:
            report(f"stand-in {name}", time.monotonic() - started)
        chosen[standin.variable] = standin.tag
    return chosen


def main(argv: list[str] | None = None) -> int:
    """CLI: print VAR=image for every image to swap."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"stand-ins to consider, of {sorted(STANDINS)} (default: all)")
    parser.add_argument("--log-dir", type=Path, default=Path(tempfile.gettempdir()) / "mlops-flights-images")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(STANDINS))
    if unknown:
        parser.error(f"unknown stand-ins {unknown}; known: {sorted(STANDINS)}")
    try:
        chosen = resolve(args.names or list(STANDINS), args.log_dir,
                         report=lambda what, s: print(f"images: {what}: {s:.1f} s", file=sys.stderr))
    except (ImageError, subprocess.CalledProcessError) as exc:
        print(f"images: error: {exc}", file=sys.stderr)
        return 1
    for key, value in chosen.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
