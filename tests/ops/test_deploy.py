"""Dockerfile and docker-compose.yml: checked without a Docker engine (none runs on our machines).

`docker compose config` (or Debian's `docker-compose config` where the client has no compose
plugin) validates and resolves the compose file; the Dockerfile is read as text, and its health
check command is run against a real gateway.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.integration.conftest import GatewayFactory

DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE = REPO_ROOT / "docker-compose.yml"
SECRETS = {"PACSGW_DB_PASSWORD": "db-secret", "GRAFANA_ADMIN_PASSWORD": "grafana-secret"}


def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is not None:
        return [legacy]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed: scripts/test installs docker-compose")


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("PACSGW_")}
    return subprocess.run([*_compose_command(), "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT, env={**clean, **env})


def test_compose_file_is_accepted_and_wires_the_four_services() -> None:
    result = _compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"gateway", "postgres", "prometheus", "grafana"}

    gateway = services["gateway"]
    assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])
    assert gateway["environment"]["PACSGW_DATABASE__URL"] == (
        "postgresql+psycopg://pacs:db-secret@postgres:5432/pacs")
    published = {str(p["target"]) if isinstance(p, dict) else str(p).split(":")[-1] for p in gateway["ports"]}
    assert published == {"11112", "8080"}
    assert gateway.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert "ports" not in services["postgres"]  # the index database stays inside the compose network

    # Every bind mount names a file or folder of the repository that Prometheus and Grafana read.
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith(("/", ".")):
                assert Path(source if source.startswith("/") else REPO_ROOT / source).exists(), source
    assert {"postgres-data", "gateway-data", "prometheus-data", "grafana-data"} <= set(config["volumes"])


def test_compose_refuses_to_start_without_the_passwords() -> None:
    result = _compose_config({})
    assert result.returncode != 0
    assert "PACSGW_DB_PASSWORD" in result.stderr


def _instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            out.append((instruction.upper(), arguments.strip()))
    return out


def test_dockerfile_is_multi_stage_slim_and_non_root_and_installs_as_the_readme_says() -> None:
    instructions = _instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2
    base = next(args for op, args in instructions if op == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert "slim" in base
    user = [args for op, args in instructions if op == "USER"][-1]
    assert user not in ("root", "0")
    assert json.loads(next(args for op, args in instructions if op == "ENTRYPOINT")) == ["pacs-gateway"]
    assert next(args for op, args in instructions if op == "STOPSIGNAL") == "SIGTERM"
    # The runtime stage copies the built environment only.
    runtime = instructions[[i for i, (op, _) in enumerate(instructions) if op == "FROM"][-1]:]
    assert [args for op, args in runtime if op == "COPY"] == [
        "--from=build /opt/pacs-gateway/.venv /opt/pacs-gateway/.venv"]

    readme = (REPO_ROOT / "README.md").read_text()
    installs = [args for op, args in instructions if op == "RUN" and "pip install" in args]
    assert installs
    for command in installs:
        assert f"\n{command}\n" in readme, f"README.md does not give the image's install command: {command}"
        assert "[" not in command, "the image installs no optional extra"

    # What the build copies exists, and .dockerignore lets it through.
    ignore = (REPO_ROOT / ".dockerignore").read_text().split()
    for op, args in instructions:
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (REPO_ROOT / source).exists(), source
                assert f"!{source}" in ignore or f"!{source}/" in ignore, source


def test_dockerfile_health_check_passes_on_a_running_gateway_and_fails_without_one(
    make_gateway: GatewayFactory,
) -> None:
    healthcheck = next(args for op, args in _instructions() if op == "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert "/healthz" in " ".join(command)
    gateway = make_gateway()
    assert gateway.http is not None
    python = shutil.which("python3") or "python3"
    run = [python if command[0] == "python3" else command[0], *command[1:]]
    env = {**os.environ, "PACSGW_HTTP__PORT": str(gateway.http.port)}
    ok = subprocess.run(run, env=env, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    gateway.http.stop()
    down = subprocess.run(run, env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0, shlex.join(run)


def test_the_installed_package_carries_its_migrations_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    """Built from what .dockerignore lets into the image's build context, the package that
    `pip install .` puts in site-packages is enough to create the schema."""
    context, wheels, site, work = (tmp_path / name for name in ("context", "wheels", "site", "work"))
    context.mkdir()
    work.mkdir()
    kept = [line[1:].rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().split() if line.startswith("!")]
    for name in kept:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, context / name)
    pip = [str(Path(sys.executable)), "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(context)],
                           capture_output=True, text=True, timeout=300, cwd=work)
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("pacs_gateway-*.whl"))
    installed = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=300, cwd=work)
    assert installed.returncode == 0, installed.stderr

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PACSGW_")}, "PYTHONPATH": str(site),
           "PACSGW_DATA_DIR": str(work / "data")}
    script = ("import sys, gateway, storage.db; from gateway.cli import main; "
              "assert gateway.__file__.startswith(sys.argv[1]), gateway.__file__; "
              "sys.exit(main(['db', 'upgrade']))")
    upgraded = subprocess.run([sys.executable, "-c", script, str(site)], capture_output=True, text=True,
                              timeout=120, cwd=work, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    head = sorted(p.name for p in (REPO_ROOT / "migrations" / "versions").glob("[0-9]*.py"))[-1].split("_")[0]
    assert f"database at {head} (head {head})" in upgraded.stdout
