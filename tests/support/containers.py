"""The production stack in real containers, the way a user installs it: podman as
../shared/FIELD-NOTES.md ("Containers (podman)") found it works on these machines.

No registry is reachable here, so what `install.sh` would pull is made locally: one Debian
bookworm base (mmdebstrap; Python 3.11, Caddy, wget) stands in for ``python:3.11-slim`` and
``caddy:2``, and the Python packages come from a wheelhouse built on the host from the test
venv (``PIP_NO_INDEX=1``). Everything else — the Dockerfile, docker-compose.yml, install.sh —
is what a user runs, plus tests/container/docker-compose.override.yml for the stores that have
no image here.

What podman 4.3 and podman-compose 1.6 do here, found on the way (each shaped the files):
- healthchecks run on systemd timers, and there is no systemd: the tests run each check once
  with ``podman healthcheck run``; podman-compose ignores ``condition: service_healthy``;
- ``podman build`` writes OCI images, which drop HEALTHCHECK: ``BUILDAH_FORMAT=docker``;
- podman-compose builds every service with a ``build:`` at once: one service per image has it;
- ``--requires`` cannot start a container whose exited one-shot dependency has dependencies of
  its own ("not found in input list"): the one-shot ``streams`` has none and waits by itself;
- Debian bookworm's Python is 3.11.2, and some wheels want 3.11.5 or newer (``wheelhouse``);
- without systemd, ``restart: unless-stopped`` did not restart a node that exited at once, and
  an existing one-shot may run beside what depends on it: so ``certs`` keeps what it made and
  replaces files whole, and nothing may depend on a restart to come up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent.parent
BASE_IMAGE = "localhost/olympus-test-base"
PROJECT = "olympus"  # docker-compose.yml's `name`
# podman on these machines: runc with cgroupfs, no default ulimits (FIELD-NOTES)
CONTAINERS_CONF = """\
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
# The tier's own image store: what it builds (several GB, and every builder stage kept as a
# layer cache) never mixes with the machine's images, and ``prune`` below touches nothing else.
STORE = Path(tempfile.gettempdir()) / "olympus-container-tier"
STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{store}/storage"
runroot = "{store}/run"
"""
# Not for the image: built from source here (llama.cpp), or tools of this machine alone
NOT_FOR_THE_IMAGE = ("llama-cpp-python", "llama_cpp_python", "py-spy", "onnx", "onnxruntime")


def missing_tools() -> list[str]:
    """What the container tier needs and this machine lacks (.ci/run installs them)."""
    needed = ["podman", "runc", "mmdebstrap"]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if shutil.which("podman-compose", path=str(Path(sys.executable).parent)) is None:
        missing.append("podman-compose (pip)")
    return missing


def require_tools() -> None:
    """Fail (in CI) or skip (elsewhere) a test of the tier on a machine that lacks its tools."""
    missing = missing_tools()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the container tier needs {', '.join(missing)}: .ci/run installs them")
        pytest.skip(f"the container tier needs {', '.join(missing)} (.ci/run installs them)")


def podman_env(folder: Path) -> dict[str, str]:
    """The environment podman, podman-compose and install.sh run in."""
    conf = folder / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    storage = folder / "storage.conf"
    storage.write_text(STORAGE_CONF.format(store=STORE))
    (STORE / "tmp").mkdir(parents=True, exist_ok=True)
    return os.environ | {
        "CONTAINERS_CONF": str(conf),
        "CONTAINERS_STORAGE_CONF": str(storage),
        # buildah stages each layer as a file here before committing it (GBs for the venv)
        "TMPDIR": str(STORE / "tmp"),
        # HEALTHCHECK lives in the docker image format only (OCI drops it)
        "BUILDAH_FORMAT": "docker",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def run(env: dict[str, str], *command: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def base_image(env: dict[str, str], folder: Path) -> str:
    """The local Debian base, made once per machine (~30 s)."""
    exists = subprocess.run(["podman", "image", "exists", BASE_IMAGE], env=env, check=False)
    if exists.returncode != 0:
        tarball = folder / "base.tar"
        run(
            env,
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--include=python3.11,python3.11-venv,ca-certificates,caddy,wget",
            "bookworm",
            str(tarball),
            timeout=900,
        )
        run(env, "podman", "import", str(tarball), BASE_IMAGE, timeout=300)
        tarball.unlink()
    return run(env, "podman", "run", "--rm", BASE_IMAGE, "python3.11", "-c",
               "import platform; print(platform.python_version())").strip()  # fmt: skip


def remove_project(env: dict[str, str], rounds: int = 5) -> None:
    """Whatever a previous run left in the tier's store: every container (the project's, and
    the working containers of a build that was killed), then the project's volumes and
    networks (``podman-compose down`` cannot, without that run's .env). The store is the
    tier's alone and ``exclusive`` holds it, so nothing in it belongs to anyone else.

    Rounds until nothing is left: a run killed mid-install leaves its ``install.sh`` going on
    without the lock, and it may create a container after the listing (a CI run failed so: a
    volume's container appeared between the two steps). One round takes everything else."""
    label = f"label=io.podman.compose.project={PROJECT}"
    errors = ""
    for _ in range(rounds):
        left = {
            "container": run(env, "podman", "ps", "--all", "--external", "--quiet").split(),
            "volume": run(env, "podman", "volume", "ls", "--quiet", "--filter", label).split(),
            "network": run(env, "podman", "network", "ls", "--quiet", "--filter", label).split(),
        }
        if not any(left.values()):
            return
        for kind, found in left.items():
            if not found:
                continue
            # --depend: a one-shot that others were created to require cannot go before them
            remove = ["podman", "rm", "--depend"] if kind == "container" else ["podman", kind, "rm"]
            done = subprocess.run(
                [*remove, "--force", *found], env=env, capture_output=True, text=True,
                timeout=300, check=False,
            )  # fmt: skip
            errors = done.stderr if done.returncode else errors
        time.sleep(2)
    raise AssertionError(f"the tier's store still holds {left} after {rounds} rounds:\n{errors}")


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One container tier at a time on a machine: two would share the store, the project's
    name and its leftovers (a second CI run removed the first's containers under it)."""
    STORE.mkdir(parents=True, exist_ok=True)
    with open(STORE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def prune(env: dict[str, str]) -> None:
    """Leave the tier's store with the images of the last build alone (the next run's cache):
    the builder stages and what a rebuild replaced go, as do buildah's leftovers."""
    run(env, "podman", "image", "prune", "--force", timeout=600, check=False)
    shutil.rmtree(STORE / "tmp", ignore_errors=True)


def checkout(destination: Path) -> Path:
    """The project's files as a clone has them (tracked, and new files not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def wheelhouse(target: Path, python_version: str) -> int:
    """Wheels of every package the test venv holds, made fit for the base image's Python (a
    wheel that asks for a newer one is replaced by the newest release that does not). They are
    kept in a cache between runs, so the image's layers stay cached too (a wheel built again
    from its sdist differs in its bytes); pip's own cache makes a first run take ~15 s."""
    cache = Path.home() / ".cache" / "olympus" / "wheelhouse"
    cache.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    frozen = subprocess.run(
        [*pip, "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    wanted = [
        line
        for line in frozen
        if "==" in line and not line.lower().startswith(NOT_FOR_THE_IMAGE) and " @ " not in line
    ]
    requirements = target / "requirements.txt"
    requirements.write_text("\n".join([*wanted, "setuptools"]) + "\n")
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "--find-links", str(cache), "-w", str(cache),
         "-r", str(requirements)],
        capture_output=True, check=True, timeout=1800,
    )  # fmt: skip
    requirements.unlink()
    pinned = {_normal(line.split("==")[0]): line.split("==")[1] for line in wanted}
    for wheel in cache.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if pinned.get(_normal(name)) == version or _normal(name) == "setuptools":
            shutil.copy2(wheel, target / wheel.name)
    for wheel in sorted(target.glob("*.whl")):
        needs = _requires_python(wheel)
        if needs and not SpecifierSet(needs).contains(python_version):
            name = wheel.name.split("-")[0]
            subprocess.run(
                [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 "--python-version", python_version, "-d", str(target), name],
                capture_output=True, check=True, timeout=300,
            )  # fmt: skip
    return len(list(target.glob("*.whl")))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _requires_python(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        for line in archive.read(metadata).decode(errors="replace").splitlines():
            if line.startswith("Requires-Python:"):
                return line.split(":", 1)[1].strip()
            if not line:
                break
    return ""


@dataclass
class Production:
    """The installed stack: where it answers, its key, and the running containers."""

    folder: Path
    env: dict[str, str]
    url: str
    key: str
    ca: Path
    install_output: str
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        done = subprocess.run(
            ["podman-compose", *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)}: {done.stderr[-3000:]}")
        return done.stdout

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return run(self.env, "podman", *args, timeout=timeout, check=check)

    def exec(self, service: str, *command: str, check: bool = True) -> str:
        return self.podman("exec", self.name(service), *command, check=check)

    def name(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def inspect(self) -> dict[str, dict[str, Any]]:
        """Every container of the project, running or exited, by service."""
        names = self.podman(
            "ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}",
            "--format", "{{.Names}}",
        ).split()  # fmt: skip
        found = json.loads(self.podman("inspect", *names)) if names else []
        return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in found}
