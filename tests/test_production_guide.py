"""docs/production.md, sections 1-7 (the local path), run as written against loopback servers.

Every ```bash block of those sections is run, in order, by one bash script: the guide's own
`prefect server start`, `python -m deployments.work_pools`, `prefect worker start` (a real process
worker), the upload of scenes into the bucket, `prefect deploy --all`, the train-model run, the runs by
hand, the schedule commands, the event and the relay. The commands that keep running (server, worker,
relay) are started in the background, in that order, and waited for. Only these values are substituted
(see ``SUBSTITUTIONS``): free loopback ports for 4200 and 8787, the loopback S3 endpoint (moto's
server) and its test keys for the `...` of the guide, a tiny training configuration for the CPU one,
the shared data folder, and the test's own install for `make install`. The test's environment adds a
private ``PREFECT_HOME`` and a short scheduler loop; it drops any ``PREFECT_*``/``EOSEG_*`` variable of
the caller (``make test`` exports ``PREFECT_LOGGING_EXTRA_LOGGERS=eoseg``, which the flows must not need).

With the guide's server still up, the tests then check through the Prefect API what the issue asked:

- the scheduler (a real ``prefect server start`` with its services) creates the hourly runs of
  ``reprocess-new-acquisitions``; one of them, made due now through the API (its scheduled time set to
  now: the schedule itself is hourly), is executed by the worker to *Completed*; the server's log has no
  ``bulk DML`` line, no ERROR line and no traceback, except SQLite's "database is locked" when two of
  the server's own transactions collide on a loaded machine (see ``server_errors``);
- the train-model run's logs hold eoseg's own stage, progress and loss lines, and task runs are named
  after stage and scene;
- a run whose required setting is empty refuses to start and names the variable;
- the artifacts show the quick-looks through a presigned link a browser can open;
- the server holds the deployments, schedule, trigger, concurrency limits and work pools that
  ``deployments/prefect.yaml`` and ``deployments.work_pools`` declare;
- reprocessing maps only what is new: the run by hand mapped the two uploaded scenes, a later scene was
  mapped alone while the others were left up to date (their maps not rewritten), and one more run maps
  nothing and says so; every map has its quick-look and a STAC item, listed in ``catalog.json``;
- no S3 credential appears in any run's logs, parameters or artifacts, the deployments, or the worker's
  output.

The transcript (every command and what it printed) is written to ``guide-transcript.txt`` in the
test's temporary folder and its tail is printed.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, S3_ENV, SHARED_DATA

pytestmark = [pytest.mark.s3, pytest.mark.slow]

GUIDE = REPO_ROOT / "docs" / "production.md"
LOCAL_PATH_END = "## 8. "  # sections 8-10 need a Dask cluster, Docker or Kubernetes
REPROCESS = "reprocess-new-acquisitions/reprocess-new-acquisitions"
PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
# What the guide's commands name (sections 4-7): the bucket's prefixes, the checkpoint, the scenes in the
# order they are uploaded (two by hand, one announced by an event, one through the relay).
SCENES_PREFIX = "s3://acme-eoseg/incoming"
MAPS_PREFIX = "s3://acme-eoseg/maps"
MODEL_URI = "s3://acme-eoseg/models/naip-v1.pt"
SCENES = [f"m_4709963_se_14_1_{date}" for date in ("20090818", "20100629", "20200831", "20120731")]
TINY_TRAINING = (
    '\'training={"epochs": 1, "iterations": 2, "batch_size": 4, "patch_size": 32, "max_patches": 8}\''
)
# Commands that keep running: started in the background and waited for ("ready" is what shows they are up).
BACKGROUND = {
    "prefect server start": "server",
    "prefect worker start": "worker",
    "deployments.acquisition_events serve": "relay",
}
SCRIPT_TIMEOUT_S = 1200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def substitutions(*, server_port: int, relay_port: int, s3_endpoint: str) -> list[tuple[str, str]]:
    """(as written in the guide, as run here): every one must occur, so a changed guide fails loudly."""
    venv = Path(sys.executable).parent
    pairs = [
        ("make install ", "true  # make install: the test runs inside that install. "),
        ("source .venv/bin/activate", f"export PATH={venv}:$PATH  # source .venv/bin/activate"),
        ("--port 4200", f"--port {server_port}"),
        ("127.0.0.1:4200", f"127.0.0.1:{server_port}"),
        ("--port 8787", f"--port {relay_port}"),
        ("127.0.0.1:8787", f"127.0.0.1:{relay_port}"),
        ("AWS_ACCESS_KEY_ID=...", f"AWS_ACCESS_KEY_ID={S3_ENV['AWS_ACCESS_KEY_ID']}"),
        ("AWS_SECRET_ACCESS_KEY=...", f"AWS_SECRET_ACCESS_KEY={S3_ENV['AWS_SECRET_ACCESS_KEY']}"),
        ("AWS_ENDPOINT_URL=http://127.0.0.1:9000", f"AWS_ENDPOINT_URL={s3_endpoint}"),
        ('\'training={"epochs": 1, "iterations": 10, "max_patches": 256}\'', TINY_TRAINING),
    ]
    if SHARED_DATA.resolve() != (REPO_ROOT.parent / "shared" / "data").resolve():
        pairs.append(("../shared/data", str(SHARED_DATA)))
    return pairs


def guide_blocks(text: str) -> list[tuple[str, str]]:
    """(section heading, body) of each ```bash block of the local path, in order."""
    local = text[: text.index(LOCAL_PATH_END)]
    blocks = []
    for match in re.finditer(r"^```bash\n(.*?)^```", local, flags=re.M | re.S):
        heading = re.findall(r"^## .*$", local[: match.start()], flags=re.M)[-1]
        blocks.append((heading, match.group(1)))
    return blocks


def logical_commands(block: str) -> list[str]:
    """The block's commands, continuation lines joined to their command (comment-only lines dropped)."""
    commands, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if not line.rstrip().endswith("\\"):
            commands.append(current)
            current = ""
    assert not current, f"unterminated continuation in the guide: {current!r}"
    return commands


def guide_script(blocks: list[tuple[str, str]], logs: Path, server_port: int) -> str:
    """One bash script: the guide's commands in order, long-running ones in the background."""
    lines = [
        "set -euo pipefail",
        f"cd {REPO_ROOT}",
        "wait_for() {  # wait_for SECONDS COMMAND...: retry until the command succeeds",
        "  local deadline=$((SECONDS + $1)); shift",
        '  until "$@" >/dev/null 2>&1; do',
        '    if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for: $*"; return 1; fi; sleep 1',
        "  done",
        "}",
    ]
    ready = {
        "server": f"wait_for 120 curl -sf http://127.0.0.1:{server_port}/api/health",
        "worker": f"wait_for 120 grep -q 'started' {logs / 'worker.log'}",
        "relay": f"wait_for 60 grep -q 'relaying bucket notifications' {logs / 'relay.log'}",
    }
    for heading, block in blocks:
        for command in logical_commands(block):
            first = command.splitlines()[0].strip()
            shown = f"$ {first.removesuffix(chr(92)).rstrip()}" + (" ..." if first.endswith(chr(92)) else "")
            lines.append(f"echo {_quote(shown)}  # {heading}")
            service = next((name for key, name in BACKGROUND.items() if key in command), None)
            if service is None:
                lines += [command.rstrip("\n"), "echo"]
                continue
            log = logs / f"{service}.log"
            bare = re.sub(r"\s+#.*$", "", command.strip())  # the guide's trailing comment would eat the `&`
            lines += [
                f"setsid {bare} > {log} 2>&1 < /dev/null &",
                f"echo $! >> {logs / 'pids'}",
                ready[service],
                f"echo '  ({service} started in the background; its output: {log})'",
            ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _script_env(home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "EOSEG_", "AWS_", "DASK_"))
    }
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_CLI_PROMPT="false",
        # The test's settings, not the guide's: a short scheduler loop, a worker that polls often.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_WORKER_QUERY_SECONDS="2",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
        COLUMNS="200",
    )
    return env


def _stop(pids_file: Path) -> None:
    """Stop the background services the script started (each leads its own process group)."""
    if not pids_file.exists():
        return
    for pid in reversed([int(line) for line in pids_file.read_text().split()]):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def guide(s3_endpoint, tmp_path_factory, shared_data):
    """The guide's local path, run to its end; yields while its server and worker still run."""
    work = tmp_path_factory.mktemp("guide")
    logs = work / "logs"
    logs.mkdir()
    server_port, relay_port = _free_port(), _free_port()
    text = GUIDE.read_text()
    pairs = substitutions(server_port=server_port, relay_port=relay_port, s3_endpoint=s3_endpoint)
    for written, run_as in pairs:
        assert written in text, f"the guide no longer contains {written!r}: update SUBSTITUTIONS"
        text = text.replace(written, run_as)
    blocks = guide_blocks(text)
    script = work / "guide.sh"
    script.write_text(guide_script(blocks, logs, server_port))
    transcript = work / "guide-transcript.txt"
    started = time.monotonic()
    try:
        with open(transcript, "w") as out:
            result = subprocess.run(
                ["bash", str(script)],
                env=_script_env(work / "prefect-home"),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=SCRIPT_TIMEOUT_S,
            )
        seconds = time.monotonic() - started
        output = transcript.read_text(errors="replace")
        print(f"guide ran in {seconds:.0f} s; transcript {transcript}\n{output[-6000:]}")
        assert result.returncode == 0, (
            f"a command of docs/production.md failed (exit {result.returncode}):\n{output[-8000:]}\n"
            + "\n".join(f"--- {f.name}:\n{f.read_text(errors='replace')[-3000:]}" for f in logs.iterdir())
        )
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{server_port}/api"}):
            yield {"transcript": output, "logs": logs, "blocks": blocks, "work": work}
    finally:
        _stop(logs / "pids")


def _flow_runs(client, deployment_name: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment = client.read_deployment_by_name(deployment_name)
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])), limit=200
    )


def _wait_until_final(client, flow_run_id, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish within {timeout} s (state {run.state})")


def _finished_reprocess_runs(client) -> list:
    """Every reprocessing run by hand, by the event or by the relay, waited for until final.

    A run that waits for the deployment's concurrency slot (collision strategy ENQUEUE) is in a
    Scheduled-type state for a while and must be waited for, not skipped. Hourly runs count only once they
    have started.
    """
    started = [
        run
        for run in _flow_runs(client, REPROCESS)
        if run.state and (not run.auto_scheduled or not run.state.is_scheduled())
    ]
    return [_wait_until_final(client, run.id) for run in started]


def _logs_of(client, flow_run_ids) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs, offset = [], 0
    while True:
        page = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(flow_run_ids))), limit=200, offset=offset
        )
        logs += page
        offset += len(page)
        if len(page) < 200:
            return logs


def test_guide_runs_as_written(guide):
    """Every command succeeded (the fixture asserts the exit code); the steps printed what the guide says."""
    transcript = guide["transcript"]
    assert re.search(r"^\$ curl -s \$PREFECT_API_URL/health.*\ntrue$", transcript, flags=re.M)
    assert "eoseg-process" in transcript and "eoseg-kubernetes" in transcript  # prefect work-pool ls
    assert "eoseg-new-acquisition" in transcript  # prefect automation ls
    assert "Flow run finished successfully in 'Completed'" in transcript  # the --watch runs
    # --watch shows the run's logs as they come, eoseg's own included (train-model: tiling, loss).
    watched = transcript.split("$ prefect deployment run train-model/train-model")[1].split("\n$ ")[0]
    assert re.search(r"\d+/\d+ chunks \(100%\)", watched) and "loss" in watched, watched[-3000:]
    assert '{"emitted": 1}' in transcript  # the relay accepted the bucket notification
    # `prefect deploy` again did not re-activate the paused schedule: the `ls` after it says False.
    after_redeploy = transcript.split("$ prefect deploy --prefect-file deployments/prefect.yaml --name")[1]
    listing = after_redeploy.split("$ prefect deployment schedule resume")[0]
    assert re.search(r"cron: 15 \* \* \* \*.*False", listing), listing


def test_server_holds_the_deployments_prefect_yaml_declares(guide):
    """What `prefect deploy --all` and `python -m deployments.work_pools` made, read back from the server."""
    from prefect.client.orchestration import get_client

    from deployments.work_pools import GPU_CONCURRENCY_LIMIT
    from tasks.model_stages import GPU_CONCURRENCY_LIMIT as acquired_by_gpu_stages

    declared = {d["name"]: d for d in yaml.safe_load(PREFECT_FILE.read_text())["deployments"]}
    assert {"city-run", "reprocess-new-acquisitions", "train-model"} <= set(declared)
    with get_client(sync_client=True) as client:
        for name, entry in declared.items():
            flow_name = entry["entrypoint"].split(":")[1].removesuffix("_flow").replace("_", "-")
            deployment = client.read_deployment_by_name(f"{flow_name}/{name}")
            assert deployment.work_pool_name == entry["work_pool"]["name"]

        reprocess = client.read_deployment_by_name(REPROCESS)
        (declared_schedule,) = declared["reprocess-new-acquisitions"]["schedules"]
        (schedule,) = reprocess.schedules
        assert schedule.schedule.cron == declared_schedule["cron"]
        assert schedule.schedule.timezone == declared_schedule["timezone"]
        # A slug and no `active:`: `prefect deploy` updates the schedule in place and keeps a pause.
        assert "active" not in declared_schedule and schedule.slug == declared_schedule["slug"]
        assert reprocess.parameters["scenes_prefix"] == SCENES_PREFIX
        assert reprocess.global_concurrency_limit.limit == 1
        assert reprocess.concurrency_options.collision_strategy == "ENQUEUE"

        (automation,) = client.read_automations_by_name("eoseg-new-acquisition")
        assert automation.trigger.expect == {"eoseg.acquisition.created"}
        assert automation.trigger.match.model_dump()["prefect.resource.id"] == (
            f"eoseg.acquisition.{SCENES_PREFIX}*"
        )
        assert automation.actions[0].deployment_id == reprocess.id

        gpu_pool = client.read_work_pool("eoseg-kubernetes")
        template = gpu_pool.base_job_template
        container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_limit }}"
        assert template["variables"]["properties"]["gpu_limit"]["default"] == 1
        assert client.read_work_pool("eoseg-docker").type == "docker"
        assert client.read_work_pool("eoseg-process").type == "process"
        assert acquired_by_gpu_stages == GPU_CONCURRENCY_LIMIT
        assert client.read_global_concurrency_limit_by_name(GPU_CONCURRENCY_LIMIT).limit == 1


def test_scheduler_creates_runs_and_a_worker_completes_one(guide):
    """The server's scheduler creates the hourly runs; the worker runs one made due now; no server error."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(REPROCESS)
        (schedule,) = deployment.schedules
        assert schedule.active and schedule.slug == "hourly"
        deadline = time.monotonic() + 60
        while True:
            scheduled = [
                run
                for run in _flow_runs(client, REPROCESS)
                if run.auto_scheduled and run.state is not None and run.state.is_scheduled()
            ]
            if len(scheduled) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(scheduled) >= 3, "the scheduler created no runs for the hourly schedule"
        times = sorted(run.expected_start_time for run in scheduled)
        assert all(t.minute == 15 for t in times) and times[1] - times[0] == datetime.timedelta(hours=1)
        # The next run is up to an hour away: make the first one due now (the only change made by hand).
        first = min(scheduled, key=lambda run: run.expected_start_time)
        client.set_flow_run_state(
            first.id, Scheduled(scheduled_time=datetime.datetime.now(datetime.UTC)), force=True
        )
        finished = _wait_until_final(client, first.id)
    print("scheduled run:", finished.name, finished.state.name, finished.state.message)
    assert finished.state.is_completed(), finished.state.message

    server_log = (guide["logs"] / "server.log").read_text(errors="replace")
    assert server_log.count("bulk DML") == 0
    errors, contention = server_errors(server_log)
    print(f"server log: {len(errors)} error(s); {len(contention)} SQLite lock contention(s) tolerated")
    assert errors == [], "\n\n".join(errors[:5])


def server_errors(log: str) -> tuple[list[str], list[str]]:
    """(errors, SQLite lock contentions): the server log's ERROR entries and tracebacks, each whole.

    A contention is SQLite's "database is locked" when two of the server's own transactions collide on a
    loaded machine (WAL mode; the heartbeat or service loop that hit it tries again at its next beat, and
    Prefect recommends PostgreSQL for shared servers). It is tolerated; nothing else is.
    """
    entries = re.split(r"\n(?=\d\d:\d\d:\d\d\.\d{3} \| )", log)
    failing = [entry for entry in entries if re.search(r"\| ERROR\s+\||Traceback|\bCRITICAL\b", entry)]
    contention = [entry for entry in failing if _only_lock_contention(entry)]
    return [entry for entry in failing if entry not in contention], contention


def _only_lock_contention(entry: str) -> bool:
    """Every exception the entry reports is SQLite's "database is locked" (raw, or wrapped by SQLAlchemy)."""
    raised = re.findall(r"^[\w.]+(?:Error|Exception)\b.*$", entry, flags=re.M)
    return bool(raised) and all("database is locked" in line for line in raised)


def test_train_model_logs_tell_the_story(guide):
    """The deployed train-model run's logs, read back through the API, hold eoseg's own progress lines."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    with get_client(sync_client=True) as client:
        (run,) = _flow_runs(client, "train-model/train-model")
        assert run.state.is_completed(), run.state.message
        messages = [log.message for log in _logs_of(client, [run.id])]
        task_runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id]))
        )
    text = "\n".join(messages)
    print(text[-4000:])
    for expected in (
        r"started a local Dask cluster: .* dashboard http",  # the dashboard link
        r"tiling .*m_4709963_se_14_1_20090818\.tif .* into \d+ chunk\(s\)",  # a stage start
        r"\d+/\d+ chunks \(100%\)",  # chunk progress
        r"loss",  # training loss
        r"trained clusterer .* in .* s on .*; checkpoint s3://acme-eoseg/models/naip-v1\.pt",  # the output
    ):
        assert re.search(expected, text), f"no log line matches {expected!r}"
    names = {task_run.name for task_run in task_runs}
    assert {"tile[m_4709963_se_14_1_20090818]", "tile[m_4709963_se_14_1_20100629]"} <= names, names
    assert "train-clusterer[naip-v1]" in names, names
    worker_log = (guide["logs"] / "worker.log").read_text(errors="replace")
    assert not re.search(r"distributed\.\w+ - INFO", worker_log), "Dask's INFO chatter reached the worker log"


def test_event_relay_and_city_run_mapped_their_scenes(guide):
    """The event and the relay each started a run; every uploaded scene has a map; city-run replaced one."""
    import s3fs
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = _finished_reprocess_runs(client)
        (city,) = _flow_runs(client, "city-run/city-run")
    # By hand, by the event, by the relay: three runs that completed (each maps what is new by then).
    by_hand_or_event = [run for run in runs if not run.auto_scheduled]
    assert len(by_hand_or_event) >= 3 and all(run.state.is_completed() for run in by_hand_or_event), [
        (run.name, run.state.name, run.state.message) for run in by_hand_or_event
    ]
    # (An hourly run may also have fired meanwhile, at minute 15: it maps what it finds, or, before the
    # model is published, fails naming the missing checkpoint, as the guide says.)
    messages = " ".join(run.state.message or "" for run in runs if run.state.is_completed())
    assert "m_4709963_se_14_1_20200831.tif" in messages and "m_4709963_se_14_1_20120731.tif" in messages
    assert city.state.is_completed() and "1 of 1 scene(s) mapped" in city.state.message
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    maps = sorted(Path(path).name for path in fs.glob("acme-eoseg/maps/*.tif"))
    dates = ("20090818", "20100629", "20120731", "20200831")
    assert maps == [f"m_4709963_se_14_1_{date}.tif" for date in dates]


def test_artifact_shows_the_quicklook_through_a_presigned_link(guide):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        (city,) = _flow_runs(client, "city-run/city-run")
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[city.id]))
        )
    images = re.findall(r"!\[quick-look of ([^\]]+)\]\((http[^)]+)\)", artifact.data)
    assert [name for name, _ in images] == ["m_4709963_se_14_1_20090818.tif"], artifact.data
    url = images[0][1]
    assert "Signature=" in url or "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=30) as response:  # what a browser does: a plain GET
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    for secret in (S3_ENV["AWS_SECRET_ACCESS_KEY"],):
        assert secret not in artifact.data


def test_a_run_with_an_empty_setting_refuses_and_names_it(guide):
    """What `prefect deploy` stores for an unset ``{{ $EOSEG_WEIGHTS_URI }}`` ("") makes the run refuse."""
    from prefect.deployments import run_deployment

    run = run_deployment(REPROCESS, parameters={"weights_uri": ""}, timeout=300)
    print(run.state.message)
    assert run.state.is_failed()
    assert "weights_uri is empty" in run.state.message and "EOSEG_WEIGHTS_URI" in run.state.message
    assert "'train'" in run.state.message
    worker_log = (guide["logs"] / "worker.log").read_text(errors="replace")
    # A refusal is an expected outcome: its one-line message is in the worker's terminal, and no copy of
    # its traceback (each copy would have one frame line "in weights_choice"; flows/logs.py).
    assert worker_log.count(", in weights_choice") == 0, worker_log[-5000:]
    assert "ConfigurationError: weights_uri is empty" in worker_log
    assert "exited with unexpected exception (ConfigurationError; its message is above)" in worker_log


def _artifact_of(client, flow_run_id):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    (artifact,) = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    return artifact


def test_reprocess_maps_only_new_scenes_then_nothing(guide):
    """The guide's runs mapped each scene once; one more run finds nothing new; the maps are catalogued."""
    import s3fs
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from eoseg.catalog.stac import item_uri_for_map

    with get_client(sync_client=True) as client:
        runs = _finished_reprocess_runs(client)
        completed = [run for run in runs if run.state.is_completed() and run.state.message]
        # The run by hand of section 7 (or an hourly run that fired before it) mapped the two scenes
        # uploaded in section 4.
        first = min(
            (run for run in completed if "2 scene(s) mapped" in run.state.message),
            key=lambda run: run.start_time,
        )
        assert all(f"{scene}.tif" in first.state.message for scene in SCENES[:2]), first.state.message
        artifact = _artifact_of(client, first.id)
        assert f"{SCENES[0]}.png" in artifact.data and "676,216" in artifact.data
        # The scenes that arrived later were mapped by a later run (the event's, the relay's, or an hourly
        # one that fired meanwhile), which left the maps it found up to date alone.
        later = [
            run
            for run in completed
            if re.search(r"mapped \(.*\), [1-9]\d* already up to date", run.state.message)
        ]
        assert later, [run.state.message for run in completed]

        last = run_deployment(REPROCESS, timeout=600)
        print("one more run:", last.state.message)
        assert last.state.is_completed(), last.state.message
        assert "nothing new" in last.state.message
        assert "nothing new" in _artifact_of(client, last.id).data

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    # Not redone by the later runs (the first scene's map was replaced on purpose by city-run).
    assert fs.info(f"{MAPS_PREFIX}/{SCENES[1]}.tif")["LastModified"] <= first.end_time
    catalog = json.loads(fs.cat_file(f"{MAPS_PREFIX}/catalog.json"))
    assert sorted(link["href"] for link in catalog["links"] if link["rel"] == "item") == sorted(
        f"./{scene}.item.json" for scene in SCENES
    )
    for scene in SCENES:
        map_uri = f"{MAPS_PREFIX}/{scene}.tif"
        assert fs.exists(map_uri) and fs.exists(f"{MAPS_PREFIX}/{scene}.png")
        item = json.loads(fs.cat_file(item_uri_for_map(map_uri)))
        assert item["properties"]["eoseg:datetime_source"] == "file-name"
        assert item["properties"]["datetime"].startswith(f"{scene[-8:-4]}-{scene[-4:-2]}-{scene[-2:]}")
        assert item["properties"]["proj:code"] == "EPSG:26914"
        assert item["assets"]["map"]["href"] == map_uri
        assert item["assets"]["model"]["href"] == MODEL_URI
        assert "thumbnail" in item["assets"]["thumbnail"]["roles"]


def test_no_credential_in_logs_parameters_or_artifacts(guide):
    """Every log line of every run on the server, read back through the API, is free of the S3 credentials."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        logs = _logs_of(client, [run.id for run in runs])
        artifacts = client.read_artifacts(limit=200)
        deployments = client.read_deployments(limit=200)
    assert len(logs) > 20 and any("scene" in log.message for log in logs)
    texts = {
        "logs": "\n".join(log.message for log in logs),
        "parameters": json.dumps([run.parameters for run in runs], default=str),
        "artifacts": "\n".join(str(artifact.data) for artifact in artifacts),
        "deployments": json.dumps([d.model_dump(mode="json") for d in deployments]),
        "worker output": (guide["logs"] / "worker.log").read_text(errors="replace"),
    }
    # The artifacts' quick-look links are presigned URLs, which carry the access key *id* (never the secret)
    # in their AWSAccessKeyId (SigV2) or X-Amz-Credential (SigV4) field: the only place it may appear.
    texts["artifacts"] = re.sub(
        r"(AWSAccessKeyId|X-Amz-Credential)=[^&)\s]+", r"\1=(key id)", texts["artifacts"]
    )
    for where, text in texts.items():
        for secret in (S3_ENV["AWS_SECRET_ACCESS_KEY"], S3_ENV["AWS_ACCESS_KEY_ID"]):
            assert secret not in text, f"a credential appears in the {where}"
