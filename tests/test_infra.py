"""Infrastructure: Kubernetes manifests, compose stack, Dockerfiles, work-pool templates, prefect.yaml.

Every file is parsed and checked structurally, always. Schema validation runs with what is installed:
the DaskCluster against the dask-kubernetes operator's CRD schema (jsonschema, strict: unknown fields are
errors, as `kubeconform -strict`), core objects against the Kubernetes API models of the `kubernetes`
client, `kubectl kustomize`, `docker compose config` (or docker-compose v1), and kubeconform/kubeval or
hadolint when on PATH. A validator that is not installed is a skip that says so, never a pass.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

INFRA = REPO_ROOT / "infra"
K8S = INFRA / "k8s"
COMPOSE = INFRA / "docker-compose.yml"
WORK_POOLS = REPO_ROOT / "deployments" / "work-pools"
PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
COMPOSE_ENV = {"MINIO_ROOT_USER": "compose-check-user", "MINIO_ROOT_PASSWORD": "compose-check-password"}


def _manifests() -> list[tuple[str, dict]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return documents


def _by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in _manifests() if doc["kind"] == kind]


# --- Kubernetes: structure ------------------------------------------------------------------------------


def test_every_manifest_has_api_version_kind_and_metadata():
    documents = _manifests()
    assert documents
    for name, doc in documents:
        api_version = doc.get("apiVersion")
        assert api_version == "v1" or (isinstance(api_version, str) and "/" in api_version), name
        assert isinstance(doc.get("kind"), str) and doc["kind"][0].isupper(), name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), name
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") == "eoseg", (
                f"{name}: {doc['kind']} outside the eoseg namespace"
            )
    kinds = {doc["kind"] for _, doc in documents}
    assert {
        "Namespace",
        "ConfigMap",
        "DaskCluster",
        "Deployment",
        "ServiceAccount",
        "Role",
        "RoleBinding",
    } <= kinds
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def test_dask_cluster_workers_hold_one_gpu_and_advertise_it():
    (cluster,) = _by_kind("DaskCluster")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    (worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    args = worker["args"]
    assert args[:2] == ["dask", "worker"] and args[args.index("--resources") + 1] == "GPU=1"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # The operator names the scheduler Service <cluster>-scheduler: flow runs reach it through EOSEG_CLUSTER.
    (config,) = _by_kind("ConfigMap")
    service = (
        f"{cluster['metadata']['name']}-scheduler.{cluster['metadata']['namespace']}.svc.cluster.local:8786"
    )
    assert config["data"]["EOSEG_CLUSTER"] == f"tcp://{service}"
    spec = yaml.safe_load(PREFECT_FILE.read_text())
    assert spec["definitions"]["work_pools"]["kubernetes_dask"]["job_variables"]["env"]["EOSEG_CLUSTER"] == (
        f"tcp://{service}"
    )
    ports = {port["port"] for port in cluster["spec"]["scheduler"]["service"]["ports"]}
    assert 8786 in ports


def test_prefect_worker_has_the_rbac_the_kubernetes_worker_needs():
    (deployment,) = _by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:3] == ["prefect", "worker", "start"]
    assert container["args"][container["args"].index("--pool") + 1] == "eoseg-kubernetes"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (role,) = _by_kind("Role")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for needed in [
        ("batch", "jobs", "create"),
        ("batch", "jobs", "watch"),
        ("batch", "jobs", "delete"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
        ("", "events", "list"),
    ]:
        assert needed in granted, needed
    (binding,) = _by_kind("RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "eoseg"} in binding[
        "subjects"
    ]
    accounts = {doc["metadata"]["name"] for doc in _by_kind("ServiceAccount")}
    template = json.loads((WORK_POOLS / "kubernetes-gpu.json").read_text())
    assert template["variables"]["properties"]["service_account_name"]["default"] in accounts
    assert pod["serviceAccountName"] in accounts


# --- Kubernetes: schemas --------------------------------------------------------------------------------


def _strict(schema):
    """Reject unknown fields, as the API server's pruning would silently drop them."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def test_dask_cluster_validates_against_the_operator_crd_schema():
    pytest.importorskip(
        "dask_kubernetes",
        reason="dask-kubernetes (a test extra) is not installed: the "
        "DaskCluster CRD schema is not available, so this schema check did not run",
    )
    import dask_kubernetes
    import jsonschema

    crd_file = (
        Path(dask_kubernetes.__file__).parent
        / "operator"
        / "deployment"
        / "helm"
        / "dask-kubernetes-operator"
        / "crds"
        / "daskcluster.yaml"
    )
    crd = yaml.safe_load(crd_file.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    validator = jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))
    (cluster,) = _by_kind("DaskCluster")
    body = {key: value for key, value in cluster.items() if key not in ("apiVersion", "kind", "metadata")}
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(body)]
    assert errors == []
    broken = json.loads(json.dumps(body))
    broken["spec"]["worker"]["spec"]["containers"][0]["resource"] = {}  # a typo must not pass
    assert list(validator.iter_errors(broken))


def _model_errors(value, type_name: str, path: str, models) -> list[str]:
    """Unknown fields and wrong types, against the OpenAPI-generated models of the kubernetes client."""
    if type_name.lower().startswith("list["):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [
            e
            for i, item in enumerate(value)
            for e in _model_errors(item, type_name[5:-1], f"{path}[{i}]", models)
        ]
    if type_name.lower().startswith(("dict(", "dict[")):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return [e for key, item in value.items() for e in _model_errors(item, inner, f"{path}.{key}", models)]
    simple = {
        "str": str,
        "int": int,
        "bool": bool,
        "float": (int, float),
        "datetime": str,
        "date": str,
        "bytes": str,
    }
    if type_name in simple:
        ok = isinstance(value, simple[type_name]) and not (type_name == "int" and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {type_name}, got {type(value).__name__}"]
    if type_name == "object":
        return []
    klass = getattr(models, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} mapping"]
    fields = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    errors = []
    for key, item in value.items():
        if key not in fields:
            errors.append(f"{path}.{key}: unknown field of {type_name}")
        else:
            errors += _model_errors(item, klass.openapi_types[fields[key]], f"{path}.{key}", models)
    return errors


def test_core_manifests_validate_against_the_kubernetes_api_models():
    kubernetes = pytest.importorskip(
        "kubernetes",
        reason="the kubernetes client (via dask-kubernetes, a test "
        "extra) is not installed: the core-object schema check did not run",
    )
    from kubernetes.client import ApiClient, models

    client = ApiClient()
    checked = []
    for name, doc in _manifests():
        if "/" in doc["apiVersion"] and not doc["apiVersion"].startswith(
            ("apps/", "rbac.authorization.k8s.io/")
        ):
            continue  # custom resources: checked against their CRD above
        model = doc["apiVersion"].rsplit("/", 1)[-1].capitalize() + doc["kind"]
        errors = _model_errors(doc, model, f"{name}:{doc['kind']}", models)
        assert errors == [], errors
        client.deserialize(
            json.dumps(doc), model, "application/json"
        )  # ValueError on a missing required field
        checked.append(model)
    assert {
        "V1Namespace",
        "V1ConfigMap",
        "V1ServiceAccount",
        "V1Role",
        "V1RoleBinding",
        "V1Deployment",
    } <= set(checked)
    (deployment,) = _by_kind("Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullpolicy"] = "Always"
    assert _model_errors(broken, "V1Deployment", "broken", models)
    del broken["spec"]["selector"]
    with pytest.raises(ValueError):
        client.deserialize(json.dumps(broken), "V1Deployment", "application/json")
    assert kubernetes.__version__


def test_manifests_validate_with_kubeconform_or_kubeval():
    tool = shutil.which("kubeconform") or shutil.which("kubeval")
    if tool is None:
        pytest.skip(
            "neither kubeconform nor kubeval is installed (not packaged for apt/npm/pip here): "
            "validation against the upstream Kubernetes JSON schemas did not run"
        )
    files = [str(p) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"]
    args = (
        [tool, "-strict", "-summary", "-ignore-missing-schemas"]
        if tool.endswith("kubeconform")
        else [tool, "--strict", "--ignore-missing-schemas"]
    )
    result = subprocess.run(args + files, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kustomization_renders_and_sets_the_image():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize infra/k8s` did not run")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(rendered) == len(_manifests())
    images = {
        c["image"]
        for doc in rendered
        if doc["kind"] == "DaskCluster"
        for part in ("scheduler", "worker")
        for c in doc["spec"][part]["spec"]["containers"]
    }
    assert images == {"registry.example.com/eoseg:0.1.0-cuda"}


# --- docker compose ---------------------------------------------------------------------------------------


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_stack_structure():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {
        "prefect-server",
        "prefect-worker",
        "dask-scheduler",
        "dask-worker-1",
        "dask-worker-2",
        "minio",
    } <= set(services)
    assert services["minio"]["image"].startswith("minio/minio:")
    assert services["prefect-server"]["image"].startswith("prefecthq/prefect:3.8.8")
    for worker in ("dask-worker-1", "dask-worker-2"):
        assert services[worker]["command"][:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert services["prefect-worker"]["command"][:3] == ["prefect", "worker", "start"]
    assert services["prefect-worker"]["environment"]["EOSEG_CLUSTER"] == "tcp://dask-scheduler:8786"
    # Credentials only from the environment (infra/.env), with no default value in the file.
    for service in ("minio", "prefect-worker", "dask-worker-1"):
        for key, value in services[service]["environment"].items():
            if "SECRET" in key or "PASSWORD" in key:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), (
                    f"{service}.{key} must come from the environment"
                )
    docker_pool = json.loads((WORK_POOLS / "docker.json").read_text())
    assert docker_pool["variables"]["properties"]["networks"]["default"] == [
        compose["networks"]["default"]["name"]
    ]


def test_compose_config_validates():
    command = _compose_command()
    if command is None:
        pytest.skip(
            "neither the docker compose plugin nor docker-compose is installed: `compose config` did not run"
        )
    import os

    env = dict(os.environ, **COMPOSE_ENV)
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert rendered["services"]["dask-worker-2"]["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    env.pop("MINIO_ROOT_PASSWORD")
    refused = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env, timeout=120
    )
    assert refused.returncode != 0 and "MINIO_ROOT_PASSWORD" in refused.stdout + refused.stderr


# --- Dockerfiles ------------------------------------------------------------------------------------------


def _stages(dockerfile: Path) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in dockerfile.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            stages.append([line])
        elif line and not line.startswith("#") and stages:
            stages[-1].append(line)
    return stages


@pytest.mark.parametrize("flavour", ["cpu", "cuda"])
def test_dockerfiles_are_multi_stage_non_root_and_pinned(flavour):
    dockerfile = INFRA / f"Dockerfile.{flavour}"
    text = dockerfile.read_text()
    stages = _stages(dockerfile)
    assert len(stages) >= 2 and all(" AS " in stage[0] for stage in stages)
    runtime = stages[-1]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("COPY --from=build") for line in runtime)
    assert "ARG TORCH_VERSION=2.13.0" in text and '"torch==${TORCH_VERSION}"' in text
    build = "\n".join(next(stage for stage in stages if " AS build" in stage[0]))
    assert build.index("torch==${TORCH_VERSION}") < build.index("constraints")
    if flavour == "cpu":
        assert "download.pytorch.org/whl/cpu" in text and "-c constraints.txt" in build
    else:
        assert re.search(r"ARG CUDA_IMAGE=nvidia/cuda:[\d.]+-\S*runtime", text)
        assert "download.pytorch.org/whl/${TORCH_CUDA}" in text
    template_user = json.loads((WORK_POOLS / "kubernetes-gpu.json").read_text())["job_configuration"][
        "job_manifest"
    ]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert users[-1].split(":")[0] == str(template_user)


def test_dockerfiles_lint_with_hadolint():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: the Dockerfiles were not linted")
    for flavour in ("cpu", "cuda"):
        result = subprocess.run(
            [hadolint, "--failure-threshold", "error", str(INFRA / f"Dockerfile.{flavour}")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout


# --- work-pool templates and prefect.yaml -----------------------------------------------------------------


@pytest.mark.parametrize("template_file", ["docker.json", "kubernetes-gpu.json"])
def test_work_pool_templates_declare_every_placeholder(template_file):
    from prefect.utilities.templating import find_placeholders

    template = json.loads((WORK_POOLS / template_file).read_text())
    declared = set(template["variables"]["properties"])
    used = {p.name for p in find_placeholders(json.dumps(template["job_configuration"]))}
    assert used and used <= declared, used - declared


def test_kubernetes_template_requests_one_gpu_by_default():
    from prefect.utilities.templating import apply_values

    template = json.loads((WORK_POOLS / "kubernetes-gpu.json").read_text())
    defaults = {
        name: prop["default"]
        for name, prop in template["variables"]["properties"].items()
        if "default" in prop
    }
    rendered = apply_values(template["job_configuration"], defaults)
    pod = rendered["job_manifest"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["envFrom"] == [{"secretRef": {"name": "eoseg-s3-credentials", "optional": True}}]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert rendered["namespace"] == "eoseg"


def test_prefect_yaml_entrypoints_pools_schedule_and_trigger():
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.events import DeploymentTriggerTypes
    from prefect.flows import load_flow_from_entrypoint
    from pydantic import TypeAdapter

    from deployments.work_pools import WORK_POOLS as POOLS

    spec = yaml.safe_load(PREFECT_FILE.read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"city-run", "reprocess-new-acquisitions", "train-model"} <= names
    for deployment in spec["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        assert (REPO_ROOT / path).exists()
        flow = load_flow_from_entrypoint(str(REPO_ROOT / deployment["entrypoint"]))
        assert flow.name == function.removesuffix("_flow").replace("_", "-")
        assert deployment["work_pool"]["name"] in POOLS
        if POOLS[deployment["work_pool"]["name"]][0] != "process":
            (step,) = deployment["pull"]
            assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/eoseg"
        for parameter in deployment.get("parameters", {}):
            assert parameter in flow.parameters.properties, (deployment["name"], parameter)
    (reprocess,) = [d for d in spec["deployments"] if d["name"] == "reprocess-new-acquisitions"]
    (schedule,) = reprocess["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    (trigger,) = reprocess["triggers"]
    TypeAdapter(DeploymentTriggerTypes).validate_python(trigger)
    assert trigger["expect"] == ["eoseg.acquisition.created"]
    assert reprocess["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


# --- the container and Kubernetes files agree with each other and with the guides ------------------------

GUIDE = REPO_ROOT / "docs" / "production.md"
INFRA_README = INFRA / "README.md"


def _kustomized_image() -> str:
    """The image the kustomization renders for registry.example.com/eoseg (name:tag)."""
    (image,) = yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]
    return f"{image.get('newName', image['name'])}:{image['newTag']}"


def test_image_names_agree_across_deployments_work_pools_manifests_compose_and_guides():
    spec = yaml.safe_load(PREFECT_FILE.read_text())
    pools = spec["definitions"]["work_pools"]
    kube_image = _kustomized_image()
    (cluster,) = _by_kind("DaskCluster")
    manifest_images = {
        c["image"] for part in ("scheduler", "worker") for c in cluster["spec"][part]["spec"]["containers"]
    }
    # The manifests' image, as kustomize rewrites it, is what the Kubernetes flow-run Jobs use too.
    assert {image.rsplit(":", 1)[0] for image in manifest_images} == {kube_image.rsplit(":", 1)[0]}
    assert pools["kubernetes_gpu"]["job_variables"]["image"] == kube_image
    assert pools["kubernetes_dask"]["job_variables"]["image"] == kube_image
    kube_template = json.loads((WORK_POOLS / "kubernetes-gpu.json").read_text())
    assert kube_template["variables"]["properties"]["image"]["default"] == kube_image
    # The CPU image: docker pool, prefect.yaml's docker deployments, the compose stack, the build commands.
    cpu_image = pools["docker"]["job_variables"]["image"]
    docker_template = json.loads((WORK_POOLS / "docker.json").read_text())
    assert docker_template["variables"]["properties"]["image"]["default"] == cpu_image
    compose = yaml.safe_load(COMPOSE.read_text())
    assert compose["x-eoseg-image"]["image"] == cpu_image
    readme = INFRA_README.read_text()
    for text in (readme, (INFRA / "Dockerfile.cpu").read_text()):
        assert re.search(r"-f infra/Dockerfile\.cpu\s+-t (\S+)\s+\.", text)[1] == cpu_image
    for text in (readme, (INFRA / "Dockerfile.cuda").read_text()):
        cuda_tag = re.search(r"-f infra/Dockerfile\.cuda\s+-t (\S+)\s+\.", text)[1]
        assert kube_image.endswith("/" + cuda_tag), (kube_image, cuda_tag)
    guide = GUIDE.read_text()
    assert f"`{cpu_image}` container" in guide
    assert kube_image in readme


def test_every_container_has_a_path_to_s3_credentials():
    # Kubernetes: the flow-run Jobs and the Dask workers load one Secret, the one infra/README creates.
    kube_template = json.loads((WORK_POOLS / "kubernetes-gpu.json").read_text())
    secret = kube_template["variables"]["properties"]["s3_credentials_secret"]["default"]
    (cluster,) = _by_kind("DaskCluster")
    (worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    assert {"secretRef": {"name": secret, "optional": True}} in worker["envFrom"]
    assert f"create secret generic {secret}" in INFRA_README.read_text()
    # Docker pool: containers do not inherit the worker's environment, so every deployment on the pool
    # names a Prefect Secret block, and the guide shows how to create a block of that name.
    spec = yaml.safe_load(PREFECT_FILE.read_text())
    docker_deployments = [d for d in spec["deployments"] if d["work_pool"]["name"] == "eoseg-docker"]
    assert docker_deployments
    guide = GUIDE.read_text()
    for deployment in docker_deployments:
        block = deployment["parameters"]["credentials_secret"]
        assert block and f'.save("{block}"' in guide, deployment["name"]
    # Compose: the process worker and the Dask workers get the S3 environment, endpoint included.
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("prefect-worker", "dask-worker-1", "dask-worker-2"):
        environment = services[name]["environment"]
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(environment), name


def test_the_lambda_relay_needs_only_the_standard_library_as_both_guides_say():
    import ast
    import sys

    source = REPO_ROOT / "deployments" / "acquisition_events.py"
    tree = ast.parse(source.read_text())
    imported = set()
    for node in tree.body:  # module level: what a Lambda imports when it loads the handler
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported
    for text in (GUIDE.read_text(), INFRA_README.read_text()):
        lambda_part = text[text.index("Lambda") :][:600]
        assert "standard library only" in lambda_part
        assert "pip install" not in lambda_part
