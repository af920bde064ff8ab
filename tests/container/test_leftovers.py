"""What a killed run leaves in the container tier's store is removed before the next run
installs (``containers.remove_project``), even while that run's ``install.sh`` goes on making
containers: a CI run failed so, a one-shot and the node that requires it appearing after the
containers were listed, so that their volume could not be removed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import containers

LABEL = f"io.podman.compose.project={containers.PROJECT}"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    containers.require_tools()
    with containers.exclusive():
        env = containers.podman_env(tmp_path)
        containers.base_image(env, tmp_path)
        yield env
        containers.remove_project(env)


def _one_shot_and_its_node(env: dict[str, str], name: str, *options: str) -> None:
    """A one-shot on the CA volume, and a node created to require it (as compose makes them)."""
    image = containers.BASE_IMAGE
    volume = ["--volume", "olympus_leftover-ca:/ca"]
    containers.run(env, "podman", "create", "--name", f"{name}-one-shot", *volume, image, "true")
    containers.run(
        env, "podman", "run", "--detach", "--name", f"{name}-node", "--requires",
        f"{name}-one-shot", *volume, *options, image, "sleep", "600",
    )  # fmt: skip


def test_a_killed_runs_leftovers_go_even_those_made_while_they_are_removed(env, monkeypatch):
    run = containers.run
    run(env, "podman", "volume", "create", "--label", LABEL, "olympus_leftover-ca")
    run(env, "podman", "network", "create", "--label", LABEL, "olympus_leftover")
    _one_shot_and_its_node(env, "early", "--network", "olympus_leftover")
    made_late: list[str] = []

    def listing_then_more(env_: dict[str, str], *command: str, **options) -> str:
        listed = run(env_, *command, **options)
        if command[:2] == ("podman", "ps") and not made_late:
            _one_shot_and_its_node(env, "late")  # the killed run's install.sh, still going
            made_late.append("late")
        return listed

    monkeypatch.setattr(containers, "run", listing_then_more)
    containers.remove_project(env)
    monkeypatch.undo()

    assert made_late
    assert run(env, "podman", "ps", "--all", "--external", "--quiet").split() == []
    for kind in ("volume", "network"):
        left = run(env, "podman", kind, "ls", "--quiet", "--filter", f"label={LABEL}").split()
        assert left == [], f"{kind}s left: {left}"
