"""deploy/: images cannot be built or pulled here, so every manifest is parsed and checked for what
can be checked (ports, commands and their flags, TLS files, image names, mounted code); the
certificate script runs for real (test_multihost.py uses its certificates for a TLS cluster)."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from _dask_procs import MAKE_CERTS, ROOT, cleo_dask_command, dask_command, env_with_tasks, make_certs
from cleo_dask.cli.main import build_parser

pytestmark = pytest.mark.docker  # checks deploy/ (Dockerfile, compose, Kubernetes manifests)

DEPLOY = ROOT / "deploy"
PYPROJECT = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+)
VERSION = re.search(r'^version = "([^"]+)"', PYPROJECT, re.M)[1]
IMAGE = f"cleo-dask:{VERSION}"
CERT_FILES = {"ca.pem", "scheduler.pem", "scheduler-key.pem", "worker.pem", "worker-key.pem",
              "client.pem", "client-key.pem"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def k8s():
    docs = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


@pytest.fixture(scope="module")
def dask_help():
    """The options ``dask scheduler`` and ``dask worker`` accept (from their --help)."""
    out = {}
    for cmd in ("scheduler", "worker"):
        text = subprocess.run(dask_command() + [cmd, "--help"], capture_output=True, text=True, timeout=60).stdout
        out[cmd] = set(re.findall(r"(--[a-z][a-z0-9-]*)", text))
    return out


def flags(argv, *names):
    """The values of options ``names`` in ``argv``."""
    return {n: argv[argv.index(n) + 1] for n in names if n in argv}


def check_dask_command(argv, dask_help, role, certs_dir="/certs"):
    assert argv[0] == "dask" and argv[1] == role
    unknown = {a for a in argv if a.startswith("--")} - dask_help[role]
    assert not unknown, f"dask {role} has no option(s) {unknown}"
    tls = flags(argv, "--tls-ca-file", "--tls-cert", "--tls-key")
    assert tls == {"--tls-ca-file": f"{certs_dir}/ca.pem", "--tls-cert": f"{certs_dir}/{role}.pem",
                   "--tls-key": f"{certs_dir}/{role}-key.pem"}
    return tls


def check_cleo_command(argv, certs_dir="/certs"):
    assert argv[0] == "cleo-dask"
    args = build_parser().parse_args(argv[1:])  # the real parser: exits on any unknown option
    assert (args.tls_ca, args.tls_cert, args.tls_key) == (f"{certs_dir}/ca.pem", f"{certs_dir}/client.pem",
                                                          f"{certs_dir}/client-key.pem")
    return args


# -- certificates -------------------------------------------------------------------------------------
def test_make_certs_makes_a_ca_and_a_certificate_per_role(tmp_path):
    certs = make_certs(tmp_path / "certs")
    assert {p.name for p in certs.iterdir()} == CERT_FILES | {"ca-key.pem"}
    for role in ("scheduler", "worker", "client"):
        verify = subprocess.run(["openssl", "verify", "-CAfile", certs / "ca.pem", certs / f"{role}.pem"],
                                capture_output=True, text=True)
        assert verify.returncode == 0 and ": OK" in verify.stdout
        assert (certs / f"{role}-key.pem").stat().st_mode & 0o077 == 0  # private keys: owner only
        text = subprocess.run(["openssl", "x509", "-in", certs / f"{role}.pem", "-noout", "-text"],
                              capture_output=True, text=True).stdout
        assert "TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text
    # running it again keeps the CA (certificates already handed out stay valid)
    ca = (certs / "ca.pem").read_bytes()
    make_certs(certs)
    assert (certs / "ca.pem").read_bytes() == ca
    assert 'out="${1:-$(dirname "$0")/certs}"' in MAKE_CERTS.read_text()  # default: deploy/certs
    assert "certs/" in (DEPLOY / ".gitignore").read_text()


# -- the image ----------------------------------------------------------------------------------------
def test_dockerfile_installs_cleo_dask_and_exposes_the_ports():
    text = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM python:(\d+)\.(\d+)", text, re.M)
    required = re.search(r'^requires-python = "([^"]+)"', PYPROJECT, re.M)[1]
    assert base and (int(base[1]), int(base[2])) >= tuple(int(x) for x in required.lstrip(">=").split("."))
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"
    assert re.search(r"^RUN pip install \.", text, re.M)
    assert re.search(r"^EXPOSE 8786 8787$", text, re.M)
    assert f"-t {IMAGE} ." in text
    assert "ENV PYTHONPATH=/app/workflows" in text


# -- docker compose -----------------------------------------------------------------------------------
def test_compose_runs_a_tls_cluster_with_serve(compose, dask_help):
    services = compose["services"]
    assert set(services) == {"scheduler", "worker-1", "worker-2", "serve"}
    assert {s["image"] for s in services.values()} == {IMAGE}
    assert services["scheduler"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}

    sched = services["scheduler"]["command"]
    check_dask_command(sched, dask_help, "scheduler")
    opts = flags(sched, "--protocol", "--port", "--dashboard-address")
    assert opts == {"--protocol": "tls", "--port": "8786", "--dashboard-address": ":8787"}
    # the dashboard (plain HTTP, no login) is published on the docker host's loopback only
    assert set(services["scheduler"]["ports"]) == {"8786:8786", "127.0.0.1:8787:8787"}
    assert "8787/health" in " ".join(services["scheduler"]["healthcheck"]["test"])

    for name in ("worker-1", "worker-2"):
        argv = services[name]["command"]
        check_dask_command(argv, dask_help, "worker")
        assert argv[2] == "tls://scheduler:8786" and flags(argv, "--name")["--name"] == name
        assert services[name]["depends_on"]["scheduler"]["condition"] == "service_healthy"

    serve = services["serve"]["command"]
    assert serve[:6] == ["cleo-dask", "serve", "--store", "/data/cleo.db", "--address", "tls://scheduler:8786"]
    check_cleo_command(serve)
    assert "cleo-data:/data" in services["serve"]["volumes"] and "cleo-data" in compose["volumes"]


def test_compose_mounts_what_the_commands_use(compose):
    for name, service in compose["services"].items():
        mounts = dict(v.split(":")[1::-1] for v in service["volumes"])  # container path -> source
        assert mounts["/certs"] == "./certs" and mounts["/app/workflows"] == "./workflows"
        assert (DEPLOY / "workflows").is_dir()
        assert service["environment"]["PYTHONPATH"] == "/app/workflows"
        used = {a.split("/certs/")[1] for a in service["command"] if a.startswith("/certs/")}
        assert used and used <= CERT_FILES, name


# -- kubernetes ---------------------------------------------------------------------------------------
def _pod_checks(pod, certs_needed):
    """Every mount has a volume; the TLS secret provides exactly the files the container uses."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    [container] = pod["containers"]
    assert container["image"] == IMAGE
    for m in container["volumeMounts"]:
        assert m["name"] in volumes
    items = {i["key"] for i in volumes["tls"]["secret"]["items"]}
    assert volumes["tls"]["secret"]["secretName"] == "cleo-dask-tls"
    assert items <= CERT_FILES and "ca-key.pem" not in items
    used = {a.split("/certs/")[1] for a in container["args"] if a.startswith("/certs/")}
    assert used == items == certs_needed
    assert volumes["workflows"]["configMap"]["name"] == "cleo-workflows"
    assert {"name": "PYTHONPATH", "value": "/app/workflows"} in container["env"]
    return container


def test_daskcluster_resource(k8s, dask_help):
    cluster = k8s["DaskCluster"]
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    name = cluster["metadata"]["name"]
    sched_spec = cluster["spec"]["scheduler"]
    sched = _pod_checks(sched_spec["spec"], {"ca.pem", "scheduler.pem", "scheduler-key.pem"})
    check_dask_command(sched["args"], dask_help, "scheduler")
    ports = {p["name"]: p["containerPort"] for p in sched["ports"]}
    assert flags(sched["args"], "--port", "--dashboard-address") == {
        "--port": str(ports["tcp-comm"]), "--dashboard-address": f":{ports['http-dashboard']}"}
    service = {p["name"]: p for p in sched_spec["service"]["ports"]}
    assert {p["targetPort"] for p in service.values()} == set(ports)
    assert sched_spec["service"]["selector"]["dask.org/cluster-name"] == name
    assert sched["readinessProbe"]["httpGet"] == {"port": "http-dashboard", "path": "/health"}

    workers = cluster["spec"]["worker"]
    assert workers["replicas"] == 2
    worker = _pod_checks(workers["spec"], {"ca.pem", "worker.pem", "worker-key.pem"})
    check_dask_command(worker["args"], dask_help, "worker")
    assert worker["args"][2] == f"tls://{name}-scheduler:{service['tcp-comm']['port']}"


def test_job_runs_cleo_dask_run_on_the_cluster(k8s):
    job = k8s["Job"]
    assert job["apiVersion"] == "batch/v1"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = _pod_checks(pod, {"ca.pem", "client.pem", "client-key.pem"})
    args = check_cleo_command(container["args"])
    assert args.command == "run" and args.spec == "/app/workflows/example.yaml"
    cluster = k8s["DaskCluster"]
    port = {p["name"]: p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"]}["tcp-comm"]
    assert args.address == f"tls://{cluster['metadata']['name']}-scheduler:{port}"
    assert args.json_out == "-" and args.wait_workers >= 1
    [rule] = job["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [1, 2]
    assert rule["onExitCodes"]["containerName"] == container["name"]


def test_configmap_holds_the_example_workflow(k8s):
    data = k8s["ConfigMap"]["data"]
    files = {p.name: p.read_text() for p in (DEPLOY / "workflows").iterdir() if p.suffix in (".py", ".yaml")}
    assert data == files


# -- the example workflow they all run ----------------------------------------------------------------
def test_the_example_workflow_validates_and_runs(engine, monkeypatch):
    env = env_with_tasks(PYTHONPATH=str(DEPLOY / "workflows"))
    done = subprocess.run(cleo_dask_command() + ["validate", str(DEPLOY / "workflows" / "example.yaml")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    monkeypatch.syspath_prepend(str(DEPLOY / "workflows"))
    from cleo_dask.core.spec import load_spec
    spec = load_spec(DEPLOY / "workflows" / "example.yaml")
    outcome = engine.submit(spec.workflow, spec.agent).result(timeout=60)
    assert outcome.ok
    assert outcome["summarize"].value.startswith("researcher-1 read ")
