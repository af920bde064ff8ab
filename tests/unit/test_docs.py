"""What the README and deploy/ promise stays true."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import AliasChoices

from athena.settings import AthenaSettings
from gateway.settings import GatewaySettings
from olympus import access, natsserver
from olympus.remote import ClientSettings
from olympus.settings import CommonSettings
from olympus.telemetry import TelemetrySettings
from workers.embedder.settings import EmbedderSettings
from workers.generator.settings import GeneratorSettings
from workers.indexer.settings import IndexerSettings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent.parent


def _variables(cls: type) -> set[str]:
    """The environment variables a settings class reads (its aliases where it names them)."""
    names = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{cls.model_config['env_prefix']}{name.upper()}")
    return names


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    settings = set().union(
        *(
            _variables(cls)
            for cls in (
                CommonSettings,
                TelemetrySettings,
                EmbedderSettings,
                IndexerSettings,
                GeneratorSettings,
                GatewaySettings,
                AthenaSettings,
                ClientSettings,
            )
        )
    )
    # what install.sh and docker-compose.yml read (the Production section's table)
    deploy = "".join((ROOT / name).read_text() for name in ("install.sh", "docker-compose.yml"))
    deployment = set(re.findall(r"\$\{(OLYMPUS_[A-Z0-9_]+)", deploy))
    assert settings - documented == set(), "settings missing from the README table"
    assert documented - settings - deployment == set(), (
        "README documents settings that do not exist"
    )


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text()[:1200]
    assert "make up" in head
    assert "make test" in head


@pytest.mark.parametrize(
    "config", ["single.conf", "cluster/node-1.conf", "cluster/node-2.conf", "cluster/node-3.conf"]
)
def test_deploy_nats_configs_are_valid(config, tmp_path):
    certs = tmp_path / "certs"
    subprocess.run([ROOT / "deploy/nats/make-certs.sh", certs], check=True, capture_output=True)
    env = {**os.environ} | {
        f"OLYMPUS_NATS_{who.upper()}_PASSWORD": "x" for who in (*access.SERVICES, access.ADMIN)
    }
    env |= {
        "OLYMPUS_NATS_TLS_CERT": str(certs / "server.pem"),
        "OLYMPUS_NATS_TLS_KEY": str(certs / "server-key.pem"),
        "OLYMPUS_NATS_TLS_CA": str(certs / "ca.pem"),
        "OLYMPUS_NATS_STORE_DIR": str(tmp_path / "jetstream"),
    }
    result = subprocess.run(
        [natsserver.binary(), "-t", "-c", str(ROOT / "deploy" / "nats" / config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


SHELLCHECK = shutil.which("shellcheck")


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed (.ci/run installs it)")
def test_deploy_scripts_pass_shellcheck():
    scripts = [ROOT / "install.sh", *sorted((ROOT / "deploy").rglob("*.sh"))]
    assert scripts
    result = subprocess.run(
        [str(SHELLCHECK), *scripts], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout
