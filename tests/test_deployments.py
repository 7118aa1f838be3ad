"""The deployments of deployments/prefect.yaml, deployed with `prefect deploy` to a real Prefect server.

A real process worker (`prefect worker start`, a subprocess) runs `reprocess-new-acquisitions` against
the loopback S3 endpoint: two NAIP scenes are mapped; a third scene is announced by an
`eoseg.acquisition.created` event (the deployment's trigger) and only it is mapped; a third run maps
nothing and says so. No training happens in the runs: a tiny checkpoint trained up front is published
as `weights_uri`. The logs of every run are read back from the Prefect API and searched for the test
credentials.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, S3_ENV, SHARED_DATA

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.s3, pytest.mark.slow]

PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
REPROCESS = "reprocess-new-acquisitions/reprocess-new-acquisitions"
NAIP = [
    SHARED_DATA / "naip" / f"m_4709963_se_14_1_{date}.tif" for date in ("20090818", "20100629", "20120731")
]
CREDENTIALS = (S3_ENV["AWS_SECRET_ACCESS_KEY"], S3_ENV["AWS_ACCESS_KEY_ID"])
BUCKET = "eoseg-deployments"
RUN_TIMEOUT_S = 600


def _prefect_cli() -> str:
    return str(Path(sys.executable).parent / "prefect")


def _subprocess_env(home: Path, **extra: str) -> dict[str, str]:
    """The test's environment (AWS_* of the loopback endpoint included) pointed at the harness server."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=PREFECT_API_URL.value(),
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_EXTRA_LOGGERS="eoseg",
        PREFECT_CLI_PROMPT="false",
        **extra,
    )
    return env


@pytest.fixture(scope="module")
def s3_dask_address(s3_endpoint):
    """A Dask cluster started after the AWS_* variables are set, so its worker processes can reach S3."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.WARNING,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def deployed(s3_endpoint, s3_dask_address, tmp_path_factory, shared_data):
    """Work pools and deployments from the repository's files, a checkpoint on S3, a process worker."""
    import s3fs

    from eoseg.tile.stage import tile_scene
    from eoseg.train.stage import train_on_stores

    work = tmp_path_factory.mktemp("deployments")
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    fs.mkdir(BUCKET)
    prefixes = {
        "scenes": f"s3://{BUCKET}/incoming",
        "maps": f"s3://{BUCKET}/maps",
        "model": f"s3://{BUCKET}/models/naip-clusterer.pt",
    }
    # The checkpoint every run applies (training is not what these tests are about).
    tile_scene(str(NAIP[0]), str(work / "train.tiles.zarr"), chunk_size=512, show_progress=False)
    train_on_stores(
        "clusterer",
        [str(work / "train.tiles.zarr")],
        prefixes["model"],
        params=dict(epochs=1, iterations=2, batch_size=4, patch_size=32),
        max_patches=8,
    )

    home = work / "prefect-home"
    env = _subprocess_env(home)
    pools = subprocess.run(
        [sys.executable, "-m", "deployments.work_pools"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pools.returncode == 0, pools.stdout + pools.stderr
    deploy_env = dict(
        env,
        EOSEG_SCENES_PREFIX=prefixes["scenes"],
        EOSEG_OUTPUT_PREFIX=prefixes["maps"],
        EOSEG_WEIGHTS_URI=prefixes["model"],
    )
    deploy = subprocess.run(
        [_prefect_cli(), "--no-prompt", "deploy", "--prefect-file", str(PREFECT_FILE), "--all"],
        env=deploy_env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr

    worker_log = work / "worker.log"
    worker_env = _subprocess_env(
        home,
        EOSEG_CLUSTER=s3_dask_address,
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
    )
    with open(worker_log, "w") as log:
        worker = subprocess.Popen(
            [
                _prefect_cli(),
                "worker",
                "start",
                "--pool",
                "eoseg-process",
                "--type",
                "process",
                "--limit",
                "1",
            ],
            env=worker_env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield {
            "fs": fs,
            "prefixes": prefixes,
            "deploy_output": deploy.stdout,
            "worker_log": worker_log,
            "worker": worker,
        }
    finally:
        # The worker and the flow runs it started share its process group.
        try:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        except ProcessLookupError:
            pass
        fs.rm(f"s3://{BUCKET}", recursive=True)


def _read_deployment(client, name: str):
    return client.read_deployment_by_name(name)


def _wait_for_final_run(client, deployment_id, *, created_after, timeout=RUN_TIMEOUT_S):
    """The first flow run of the deployment created after ``created_after``, once it is final."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=created_after)
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )
        if runs and runs[0].state is not None and runs[0].state.is_final():
            return runs[0]
        time.sleep(1)
    raise AssertionError(f"no finished run of deployment {deployment_id} within {timeout} s")


def test_prefect_yaml_declares_the_deployments_the_server_holds(deployed):
    from prefect.client.orchestration import get_client

    spec = yaml.safe_load(PREFECT_FILE.read_text())
    declared = {d["name"]: d for d in spec["deployments"]}
    assert {"city-run", "reprocess-new-acquisitions", "train-model"} <= set(declared)
    with get_client(sync_client=True) as client:
        for name, entry in declared.items():
            flow_name = entry["entrypoint"].split(":")[1].removesuffix("_flow").replace("_", "-")
            deployment = _read_deployment(client, f"{flow_name}/{name}")
            assert deployment.work_pool_name == entry["work_pool"]["name"]

        reprocess = _read_deployment(client, REPROCESS)
        (declared_schedule,) = declared["reprocess-new-acquisitions"]["schedules"]
        (schedule,) = reprocess.schedules
        assert schedule.schedule.cron == declared_schedule["cron"]
        assert schedule.schedule.timezone == declared_schedule["timezone"]
        # A slug and no `active:`: `prefect deploy` updates the schedule in place and keeps a pause.
        assert "active" not in declared_schedule and schedule.active is True
        assert schedule.slug == declared_schedule["slug"]
        # Keep the hourly schedule from firing in the middle of the tests.
        client.update_deployment_schedule(reprocess.id, schedule.id, active=False)
        assert reprocess.parameters["scenes_prefix"] == deployed["prefixes"]["scenes"]
        assert reprocess.global_concurrency_limit.limit == 1
        assert reprocess.concurrency_options.collision_strategy == "ENQUEUE"

        (automation,) = client.read_automations_by_name("eoseg-new-acquisition")
        assert automation.trigger.expect == {"eoseg.acquisition.created"}
        assert automation.trigger.match.model_dump()["prefect.resource.id"] == (
            f"eoseg.acquisition.{deployed['prefixes']['scenes']}*"
        )
        assert automation.actions[0].deployment_id == reprocess.id

        gpu_pool = client.read_work_pool("eoseg-kubernetes")
        container = gpu_pool.base_job_template["job_configuration"]["job_manifest"]["spec"]["template"][
            "spec"
        ]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_limit }}"
        assert gpu_pool.base_job_template["variables"]["properties"]["gpu_limit"]["default"] == 1
        assert client.read_work_pool("eoseg-docker").type == "docker"
        assert client.read_work_pool("eoseg-process").type == "process"
        from deployments.work_pools import GPU_CONCURRENCY_LIMIT
        from tasks.model_stages import GPU_CONCURRENCY_LIMIT as acquired_by_gpu_stages

        assert acquired_by_gpu_stages == GPU_CONCURRENCY_LIMIT
        assert client.read_global_concurrency_limit_by_name(GPU_CONCURRENCY_LIMIT).limit == 1
    print(deployed["deploy_output"][-1500:])


def test_reprocess_maps_only_new_scenes_then_nothing(deployed):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from deployments.acquisition_events import emit, events_from_s3_notification
    from eoseg.catalog.stac import item_uri_for_map

    fs, prefixes = deployed["fs"], deployed["prefixes"]
    for scene in NAIP[:2]:
        fs.put_file(str(scene), f"{prefixes['scenes']}/{scene.name}")
    with get_client(sync_client=True) as client:
        reprocess = _read_deployment(client, REPROCESS)
        # An operator's edit in the UI: smaller chunks for these small scenes (event-started runs use it too).
        client.update_deployment(
            reprocess.id, DeploymentUpdate(parameters=dict(reprocess.parameters, tile={"chunk_size": 512}))
        )

    first = run_deployment(REPROCESS, timeout=RUN_TIMEOUT_S)
    print("run 1:", first.state.message)
    assert first.state.is_completed(), first.state.message
    assert "2 scene(s) mapped" in first.state.message
    assert all(scene.name in first.state.message for scene in NAIP[:2])
    fs.invalidate_cache()
    first_maps = {
        scene.stem: fs.info(f"{prefixes['maps']}/{scene.stem}.tif")["LastModified"] for scene in NAIP[:2]
    }

    # A third scene arrives; the bucket notification is relayed as an event, and the trigger starts a run.
    third = NAIP[2]
    fs.put_file(str(third), f"{prefixes['scenes']}/{third.name}")
    bucket, _, key = f"{prefixes['scenes']}/{third.name}"[len("s3://") :].partition("/")
    notification = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventSource": "aws:s3",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1}},
            }
        ]
    }
    announced = datetime.datetime.now(datetime.UTC)
    assert emit(events_from_s3_notification(notification), api_url=PREFECT_API_URL.value()) == 1
    with get_client(sync_client=True) as client:
        second = _wait_for_final_run(client, reprocess.id, created_after=announced)
    print("run 2 (event):", second.state.message)
    assert second.state.is_completed(), second.state.message
    assert "1 scene(s) mapped" in second.state.message and third.name in second.state.message
    assert "2 already up to date" in second.state.message

    last = run_deployment(REPROCESS, timeout=RUN_TIMEOUT_S)
    print("run 3:", last.state.message)
    assert last.state.is_completed(), last.state.message
    assert "nothing new" in last.state.message

    fs.invalidate_cache()
    for scene in NAIP[:2]:  # not redone by the later runs
        assert fs.info(f"{prefixes['maps']}/{scene.stem}.tif")["LastModified"] == first_maps[scene.stem]
    catalog = json.loads(fs.cat_file(f"{prefixes['maps']}/catalog.json"))
    assert sorted(link["href"] for link in catalog["links"] if link["rel"] == "item") == [
        f"./{scene.stem}.item.json" for scene in NAIP
    ]
    for scene in NAIP:
        map_uri = f"{prefixes['maps']}/{scene.stem}.tif"
        assert fs.exists(map_uri) and fs.exists(f"{prefixes['maps']}/{scene.stem}.png")
        item = json.loads(fs.cat_file(item_uri_for_map(map_uri)))
        assert item["properties"]["eoseg:datetime_source"] == "file-name"
        assert item["properties"]["datetime"].startswith(
            f"{scene.stem[-8:-4]}-{scene.stem[-4:-2]}-{scene.stem[-2:]}"
        )
        assert item["properties"]["proj:code"] == "EPSG:26914"
        assert item["assets"]["map"]["href"] == map_uri
        assert item["assets"]["model"]["href"] == prefixes["model"]
        assert "thumbnail" in item["assets"]["thumbnail"]["roles"]

    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[last.id]))
        )
        assert "nothing new" in artifact.data
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[first.id]))
        )
        assert "m_4709963_se_14_1_20090818.png" in artifact.data and "676,216" in artifact.data


def test_no_credential_in_logs_parameters_or_artifacts(deployed):
    """Every log line of every run on the server, read back through the API, is free of the S3 credentials."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        if not any(run.deployment_id for run in runs):  # this test alone: produce one run through the worker
            from prefect.deployments import run_deployment

            run_deployment(REPROCESS, timeout=RUN_TIMEOUT_S)
            runs = client.read_flow_runs(limit=200)
        logs, offset = [], 0
        while True:
            page = client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id for run in runs])),
                limit=200,
                offset=offset,
            )
            logs += page
            offset += len(page)
            if len(page) < 200:
                break
        artifacts = client.read_artifacts(limit=200)
        deployments = client.read_deployments(limit=200)
    assert len(logs) > 20 and any(
        "reprocess-new-acquisitions" in log.message or "scene" in log.message for log in logs
    )
    texts = {
        "logs": "\n".join(log.message for log in logs),
        "parameters": json.dumps([run.parameters for run in runs], default=str),
        "artifacts": "\n".join(str(artifact.data) for artifact in artifacts),
        "deployments": json.dumps([d.model_dump(mode="json") for d in deployments]),
        "worker output": deployed["worker_log"].read_text(errors="replace"),
    }
    # The artifacts' quick-look links are presigned URLs, which carry the access key *id* (never the secret)
    # in their AWSAccessKeyId (SigV2) or X-Amz-Credential (SigV4) field: the only place it may appear.
    texts["artifacts"] = re.sub(
        r"(AWSAccessKeyId|X-Amz-Credential)=[^&)\s]+", r"\1=(key id)", texts["artifacts"]
    )
    for where, text in texts.items():
        for secret in CREDENTIALS:
            assert secret not in text, f"a credential appears in the {where}"
