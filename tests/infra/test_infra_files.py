"""infra/ and prefect.yaml: the files parse, and everything they name exists in the code.

Checked against the real parsers: click for `ial ...` and `dask ...` command lines, DeepSpeed's
own launcher argument parser for the training job, Prefect's prefect.yaml model and its list of
settings for ``PREFECT_*`` variables, ``importlib`` for module paths, ``flows.deployments`` for
deployment names.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"
K8S = sorted((INFRA / "k8s").glob("*.yaml"))
PREFECT_YAML = REPO / "prefect.yaml"
TEXT_FILES = [COMPOSE, *K8S, PREFECT_YAML, INFRA / "Dockerfile", INFRA / "README.md",
              INFRA / "hostfile"]
CODE_DIRS = ("ial", "flows", "preprocessing")

# Variables read by something other than this project or Prefect, and who reads them.
READ_ELSEWHERE = {
    "AWS_ENDPOINT_URL": "botocore", "AWS_ACCESS_KEY_ID": "botocore",
    "AWS_SECRET_ACCESS_KEY": "botocore", "AWS_DEFAULT_REGION": "botocore",
    "DS_ACCELERATOR": "deepspeed", "TORCH_EXTENSIONS_DIR": "torch",
    "OMP_NUM_THREADS": "OpenMP", "NCCL_DEBUG": "NCCL (C library)",
    "PYTHONUNBUFFERED": "python", "PIP_NO_CACHE_DIR": "pip",
    "POSTGRES_USER": "postgres image", "POSTGRES_PASSWORD": "postgres image",
    "POSTGRES_DB": "postgres image", "MINIO_ROOT_USER": "minio image",
    "MINIO_ROOT_PASSWORD": "minio image", "S3_ACCESS_KEY": "compose .env (dev credentials)",
    "S3_SECRET_KEY": "compose .env (dev credentials)",
    "JOB_COMPLETION_INDEX": "Kubernetes Indexed Job", "DASK_WORKER_NAME": "Dask operator",
    "TORCH_INDEX": "Dockerfile ARG",
}
PACKAGE_OF = {"botocore": "botocore", "deepspeed": "deepspeed"}


def load_all(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def walk(node):
    """Every (key, value) pair and scalar in a YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def code_text() -> str:
    return "\n".join(p.read_text() for d in CODE_DIRS for p in (REPO / d).rglob("*.py"))


# ---------------------------------------------------------------------------------------------
# Parsing and structure
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [COMPOSE, *K8S, PREFECT_YAML,
                                  *sorted((REPO / "configs" / "retrain").glob("*.yaml"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_files_parse(path):
    assert load_all(path), f"{path} is empty"


def test_compose_has_every_role():
    services = load_all(COMPOSE)[0]["services"]
    for role in ("postgres", "prefect-server", "prefect-worker", "serve", "dask-scheduler",
                 "dask-worker", "object-store", "trainer"):
        assert role in services, role
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    gpu = services["trainer"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert "gpu" in gpu["capabilities"]
    for name, service in services.items():  # every IAL role reaches the same Prefect API
        if service.get("image", "").startswith("ial:"):
            api = service["environment"]["PREFECT_API_URL"]
            assert api == "http://prefect-server:4200/api", name


def test_k8s_manifests_have_a_work_pool_worker_a_dask_cluster_and_a_deepspeed_job():
    docs = [d for p in K8S for d in load_all(p)]
    kinds = {d.get("kind") for d in docs if "kind" in d}
    assert {"DaskCluster", "Job", "Service", "ConfigMap", "Secret", "Namespace"} <= kinds
    worker = load_all(INFRA / "k8s" / "prefect-worker-values.yaml")[0]["worker"]
    assert worker["config"]["type"] == "kubernetes"
    pools = {d["work_pool"]["name"] for d in load_all(PREFECT_YAML)[0]["deployments"]}
    assert worker["config"]["workPool"] in pools

    job = next(d for d in docs if d.get("kind") == "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    hostfile_cm = next(d for d in docs
                       if d.get("kind") == "ConfigMap" and "hostfile" in d.get("data", {}))
    lines = [ln for ln in hostfile_cm["data"]["hostfile"].splitlines() if ln.strip()]
    assert len(lines) == job["spec"]["completions"] == job["spec"]["parallelism"]
    name, service = job["metadata"]["name"], job["spec"]["template"]["spec"]["subdomain"]
    for i, line in enumerate(lines):
        assert re.fullmatch(rf"{name}-{i}\.{service} slots=\d+", line), line
    # both hostfiles parse with DeepSpeed's own hostfile parser
    from deepspeed.launcher.runner import _parse_hostfile

    assert len(_parse_hostfile(lines)) == job["spec"]["completions"]
    assert _parse_hostfile((INFRA / "hostfile").read_text().splitlines())


def test_prefect_yaml_matches_the_deployments_declared_in_code():
    from prefect.cli.deploy._models import PrefectYamlModel

    from flows.deployments import DEFAULT_CRON, DEFAULT_TIMEZONE, SPECS

    data = load_all(PREFECT_YAML)[0]
    PrefectYamlModel.model_validate(data)
    entries = data["deployments"]
    assert len(entries) == len(SPECS)
    for spec in SPECS:
        module, attr = spec.flow_ref.split(":")
        entrypoint = f"{module.replace('.', '/')}.py:{attr}"
        match = [e for e in entries if e["name"] == spec.name and e["entrypoint"] == entrypoint]
        assert len(match) == 1, f"{spec.full_name} ({entrypoint}) missing from prefect.yaml"
        entry = match[0]
        for key, value in spec.parameters.items():
            if key == "config":  # the code's path is absolute when the file exists here
                assert value.endswith(entry["parameters"][key]), spec.full_name
                assert (REPO / entry["parameters"][key]).exists(), entry["parameters"][key]
            else:
                assert entry["parameters"][key] == value, (spec.full_name, key)
        if spec.nightly:
            assert entry["schedules"] == [{"cron": DEFAULT_CRON, "timezone": DEFAULT_TIMEZONE,
                                           "active": True}]
            assert entry["concurrency_limit"] == 1
        else:
            assert "schedules" not in entry
        assert (REPO / entrypoint.split(":")[0]).exists(), entrypoint


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
def compose_commands() -> list[list[str]]:
    services = load_all(COMPOSE)[0]["services"]
    return [s["command"] for s in services.values()
            if isinstance(s.get("command"), list) and s.get("image", "").startswith("ial:")]


def k8s_commands() -> list[list[str]]:
    """Container command lines of the k8s manifests (bash -c scripts split into words)."""
    out = []
    for path in K8S:
        for doc in load_all(path):
            for key, value in walk(doc):
                if key == "containers":
                    for c in value:
                        cmd = list(c.get("command", [])) + list(c.get("args", []))
                        if cmd[:2] == ["/bin/bash", "-c"]:
                            script = re.sub(r"^exec\s+", "", cmd[2].strip())
                            # what the shell substitutes at run time (an Indexed Job's index
                            # is an int)
                            script = re.sub(r"\$\{(\w+)\}",
                                            lambda m: "0" if m.group(1).endswith("INDEX")
                                            else f"value-of-{m.group(1)}", script)
                            cmd = shlex.split(script)
                        # files the pod mounts (a ConfigMap): their repository copy
                        mounted = {"/etc/ial/hostfile": str(INFRA / "hostfile")}
                        out.append([mounted.get(str(x), str(x)) for x in cmd])
    return out


def text_command_lines() -> list[str]:
    """Command lines written in prose/comments (README, comments of the YAML files, Dockerfile)."""
    lines = []
    for path in TEXT_FILES:
        for raw in path.read_text().splitlines():
            line = raw.strip().lstrip("#").strip().strip("`").rstrip("\\").strip()
            lines.append(line)
    return lines


def check_command(argv: list[str]) -> None:
    """Parse ``argv`` with the program's real argument parser (or find the module it names)."""
    prog, args = argv[0], argv[1:]
    if prog == "ial":
        from ial.cli import SUBCOMMANDS, main

        assert args[0] in SUBCOMMANDS, f"`ial {args[0]}` is not a subcommand"
        sub = main.get_command(None, args[0])
        ctx = sub.make_context(args[0], args[1:])
        config = ctx.params.get("config_path")
        if config and not os.path.isabs(config):
            assert (REPO / config).exists(), f"config {config} of `ial {args[0]}` does not exist"
        if args[0] == "serve":
            from flows.deployments import select

            ctx = sub.make_context("serve", args[1:])
            select(ctx.params["only"])
    elif prog == "dask":
        from distributed.cli import dask_scheduler, dask_worker

        cli = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}[args[0]]
        cli.make_context(f"dask {args[0]}", args[1:])
    elif prog == "deepspeed":
        from deepspeed.launcher.runner import parse_args

        parsed = parse_args(args)
        if parsed.module:
            assert importlib.util.find_spec(parsed.user_script), parsed.user_script
        if "--config" in parsed.user_args:
            path = parsed.user_args[parsed.user_args.index("--config") + 1]
            assert (REPO / path).exists(), f"training config {path} does not exist"
    elif prog == "python" and args[:1] == ["-m"]:
        assert importlib.util.find_spec(args[1]), f"python -m {args[1]}: no such module"
    elif prog == "prefect":
        assert args[0] in ("server", "worker", "deployment", "deploy", "work-pool"), args
    else:
        raise AssertionError(f"unexpected program {prog!r} in {argv}")


def test_compose_and_k8s_commands_parse_with_the_real_parsers():
    commands = compose_commands() + k8s_commands()
    programs = {c[0] for c in commands}
    assert {"ial", "dask", "prefect"} <= programs
    for argv in commands:
        check_command(argv)


def test_commands_in_docs_and_comments_exist():
    checked = 0
    for line in text_command_lines():
        for m in re.finditer(r"(?<![\w/-])ial "
                             r"(serve|ingest|featurize|train|evaluate|separate|demo)([^|`;&]*)",
                             line):
            # prose may name an option without its value: check the subcommand and option names
            from ial.cli import main

            sub = main.get_command(None, m.group(1))
            known = {opt for p in sub.params for opt in p.opts}
            for option in re.findall(r"(?<!\S)(--[\w-]+)", m.group(2)):
                assert option in known, f"`ial {m.group(1)} {option}`: no such option"
            checked += 1
        for m in re.finditer(r"python -m ([\w.]+)|--module ([\w.]+)", line):
            module = m.group(1) or m.group(2)
            assert importlib.util.find_spec(module), f"{module} named in infra does not exist"
            checked += 1
    assert checked >= 3


def test_deployment_names_used_anywhere_exist():
    from flows.deployments import deployment_names

    names = set(deployment_names())
    used = set()
    for path in [*TEXT_FILES, REPO / "docs" / "scaling.md"]:
        used |= set(re.findall(r"prefect deployment run ([\w-]+/[\w-]+)", path.read_text()))
        used |= set(re.findall(r"`((?:ingest|featurize|train|evaluate|retrain)/[\w-]+)`",
                               path.read_text()))
    assert used, "no deployment named in infra/docs"
    assert used <= names, f"unknown deployments named: {sorted(used - names)}"


def test_dockerfile_copies_paths_that_exist_and_runs_ial():
    text = (INFRA / "Dockerfile").read_text()
    for m in re.finditer(r"^COPY (.+) \S+$", text, flags=re.M):
        for src in m.group(1).split():
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repo"
    cmd = re.search(r"^CMD (\[.*\])$", text, flags=re.M).group(1)
    check_command(yaml.safe_load(cmd))


# ---------------------------------------------------------------------------------------------
# Environment variables
# ---------------------------------------------------------------------------------------------
def env_var_names() -> dict[str, set[str]]:
    """Variable name -> files naming it (YAML env keys and $VAR / ${VAR} / $(VAR) / {{ $VAR }})."""
    found: dict[str, set[str]] = {}

    def add(name: str, path: Path) -> None:
        found.setdefault(name, set()).add(str(path.relative_to(REPO)))

    ref = re.compile(r"\$\{?\(?\s*([A-Z][A-Z0-9_]*_[A-Z0-9_]+)")
    for path in TEXT_FILES:
        text = path.read_text()
        for name in ref.findall(text):
            add(name, path)
        for name in re.findall(r"^(?:ENV|ARG)\s+([A-Z][A-Z0-9_]+)|^\s+([A-Z][A-Z0-9_]+)=", text,
                               flags=re.M):
            for n in name:
                if n:
                    add(n, path)
        for name in re.findall(r"`((?:IAL|PREFECT|AWS)_[A-Z0-9_]+)`", text):
            add(name, path)
        if path.suffix in (".yml", ".yaml"):
            for doc in load_all(path):
                for key, value in walk(doc):
                    if key in ("environment", "data", "stringData") and isinstance(value, dict):
                        for name in value:
                            if re.fullmatch(r"[A-Z][A-Z0-9_]+", str(name)):
                                add(name, path)
                    if key == "env" and isinstance(value, list):
                        for item in value:
                            add(item["name"], path)
    return found


def test_every_environment_variable_is_read_by_something_real():
    from prefect.settings import Settings
    from prefect.settings.legacy import _get_valid_setting_names

    prefect_settings = set(_get_valid_setting_names(Settings))
    code = code_text()
    names = env_var_names()
    assert {"IAL_ROOT", "IAL_DASK_ADDRESS", "PREFECT_API_URL", "AWS_ENDPOINT_URL"} <= set(names)
    for name, files in sorted(names.items()):
        if name.startswith("IAL_"):
            assert f'"{name}"' in code, \
                f"{name} (named in {sorted(files)}) is read nowhere in the code"
        elif name.startswith("PREFECT_"):
            assert name in prefect_settings, f"{name} (in {sorted(files)}) is not a Prefect setting"
        else:
            assert name in READ_ELSEWHERE, f"{name} (in {sorted(files)}): who reads it?"
            package = PACKAGE_OF.get(READ_ELSEWHERE[name])
            if package:
                root = Path(importlib.util.find_spec(package).origin).parent
                assert any(name in p.read_text(errors="ignore") for p in root.rglob("*.py")), name
