"""The deployment files, checked without Docker or a cluster: the compose
stack (every file it mounts exists, the services point at each other, the API
is published), the Kubernetes base (built as kustomize builds it, every
resource valid against the Kubernetes schemas, the pieces consistent), the
alert rules (promtool), and the generated secrets working with a real
`tollgate run`."""

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tollgate_testlib import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yaml"
K8S = ROOT / "deploy" / "k8s"
PROM_DIR = ROOT / "deploy" / "prometheus"
K8S_VERSION = "1.31"


@pytest.fixture(scope="module")
def secrets(tmp_path_factory):
    out = tmp_path_factory.mktemp("secrets")
    subprocess.run([str(ROOT / "scripts" / "deploy-secrets.sh"), str(out)], check=True, capture_output=True)
    return out


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile_env():
    text = (ROOT / "deploy" / "Dockerfile").read_text().split("FROM debian")[-1]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(re.findall(r"(?ms)^ENV (.*?)(?:\n(?!\s))", text))))
    workdir = re.findall(r"(?m)^WORKDIR (\S+)", text)[-1]
    volume = re.findall(r"(?m)^VOLUME (\S+)", text)[-1]
    return env, workdir, volume


def test_the_image_keeps_its_outputs_on_its_volume():
    env, workdir, volume = dockerfile_env()
    cfg = tomllib.loads((ROOT / "pipelines" / "default.toml").read_text())
    for d in (cfg["output"]["rollup_dir"], cfg["output"]["late_dir"], cfg["decisions"]["log_dir"]):
        assert not d.startswith("/") and str(Path(workdir) / d).startswith(volume + "/"), (d, workdir, volume)
    assert env["TOLLGATE_HTTP_LISTEN"].startswith("0.0.0.0:"), env
    for k in ("TOLLGATE_CONFIG", "TOLLGATE_POLICIES_DIR", "TOLLGATE_GATES_DIR"):
        assert env[k].startswith("/etc/tollgate/pipelines/"), env
        assert (ROOT / "pipelines" / env[k].removeprefix("/etc/tollgate/pipelines/")).exists(), env[k]


def test_compose_mounts_only_files_that_exist_and_wires_the_services(secrets):
    c = compose()
    s = c["services"]
    assert set(s) == {"kafka", "tollgate", "prometheus", "grafana"}
    # Kafka in KRaft mode: no ZooKeeper anywhere.
    assert "controller" in s["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert "zookeeper" not in COMPOSE.read_text().lower()

    # Every bind mount and secret file exists (secrets: as deploy-secrets.sh writes them).
    def host_file(src):
        path = (ROOT / src).resolve()
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("deploy", "secrets"):
            return secrets / Path(*rel.parts[2:])
        return path

    mounts = {}
    for name, svc in s.items():
        for v in svc.get("volumes", []):
            src, target = v.split(":")[:2]
            if src.startswith("."):
                assert host_file(src).exists(), f"{name} mounts {src}, which does not exist"
                mounts[(name, target)] = host_file(src)
            else:
                assert src in c["volumes"], f"{name}: volume {src} not declared"
    for name, spec in c["secrets"].items():
        assert host_file(spec["file"]).is_file(), f"secret {name}: {spec['file']} missing"

    # Tollgate: API published, bound to all interfaces, outputs on a named volume.
    t = s["tollgate"]
    env = t["environment"]
    port = env["TOLLGATE_HTTP_LISTEN"].rsplit(":", 1)[1]
    assert env["TOLLGATE_HTTP_LISTEN"].startswith("0.0.0.0:")
    assert f"{port}:{port}" in t["ports"]
    _, workdir, volume = dockerfile_env()
    assert f"tollgate-data:{volume}" in t["volumes"]
    assert env["KAFKA_BROKERS"] == "kafka:9092" and "kafka" in t["depends_on"]
    for var, secret in (("SAVE_HMAC_SECRET_FILE", "hmac-secret"), ("AUTH_TOKENS_FILE", "tokens.json")):
        assert env[var] == f"/run/secrets/{secret}" and secret in t["secrets"], var

    # Prometheus: the shipped config, scraping the API with the scrape token.
    p = s["prometheus"]
    assert mounts[("prometheus", "/etc/prometheus/prometheus.yml")] == PROM_DIR / "prometheus.yml"
    prom = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    for f in prom["rule_files"]:
        assert mounts[("prometheus", f"/etc/prometheus/{f}")] == PROM_DIR / f
    (job,) = prom["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"tollgate:{port}"]
    cred = job["authorization"]["credentials_file"]
    assert cred.startswith("/run/secrets/") and cred.removeprefix("/run/secrets/") in p["secrets"]

    # Grafana: the data source is this Prometheus, the dashboard is provisioned.
    g = s["grafana"]
    ds_dir = mounts[("grafana", "/etc/grafana/provisioning/datasources")]
    (ds,) = yaml.safe_load((ds_dir / "prometheus.yaml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    assert "9090:9090" in p["ports"]
    dash_dir = mounts[("grafana", "/etc/grafana/provisioning/dashboards")]
    (provider,) = yaml.safe_load((dash_dir / "tollgate.yaml").read_text())["providers"]
    dashboards = provider["options"]["path"]
    assert mounts[("grafana", f"{dashboards}/tollgate.json")] == ROOT / "deploy" / "grafana" / "tollgate.json"
    assert g["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana-admin-password"


def test_alert_rules_pass_promtool_and_their_unit_tests():
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run scripts/setup.sh (Debian package prometheus)"
    for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts_test.yaml"]):
        r = subprocess.run([promtool, *args], cwd=PROM_DIR, capture_output=True, text=True)
        assert r.returncode == 0, f"promtool {' '.join(args)}:\n{r.stdout}\n{r.stderr}"


def kustomize_build():
    """The resources of deploy/k8s as `kustomize build` makes them, for the
    features the base uses: resources, configMapGenerator (files), labels
    and images. ConfigMap names get kustomize's content hash suffix."""
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = [d for f in k["resources"] for d in yaml.safe_load_all((K8S / f).read_text()) if d]
    renamed = {}
    for gen in k["configMapGenerator"]:
        data = {}
        for entry in gen["files"]:
            key, _, path = entry.rpartition("=")
            src = (K8S / path).resolve()
            data[key or src.name] = src.read_text()
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
        docs.append(cm)
        renamed[gen["name"]] = gen["name"]  # the hash suffix does not matter to the checks below
    for d in docs:
        for lab in k.get("labels", []):
            d["metadata"].setdefault("labels", {}).update(lab["pairs"])
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in k.get("images", [])}
    for d in docs:
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            c["image"] = images.get(c["image"], c["image"])
    return docs


def by_kind(docs):
    out = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def test_the_kubernetes_base_is_valid_and_consistent(secrets):
    docs = kustomize_build()
    kinds = by_kind(docs)
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "ServiceMonitor"} <= set(kinds)

    # Every built-in resource against the Kubernetes schema (strict: no unknown fields).
    for d in docs:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD; checked by hand below
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{d['kind']}/{d['metadata']['name']}: {e.message} at {list(e.path)}") from None

    # Every file of pipelines/ is in a ConfigMap (a new policy is not forgotten).
    cms = {c["metadata"]["name"]: c for c in kinds["ConfigMap"]}
    for name, pattern, sub in (("tollgate-policies", "*.toml", "policies"), ("tollgate-gates", "*.rego", "gates")):
        on_disk = {p.name for p in (ROOT / "pipelines" / sub).glob(pattern)}
        assert set(cms[name]["data"]) == on_disk, f"{name}: kustomization.yaml lists {sorted(cms[name]['data'])}, pipelines/{sub} has {sorted(on_disk)}"
    assert cms["tollgate-config"]["data"]["default.toml"] == (ROOT / "pipelines" / "default.toml").read_text()

    (sts,) = kinds["StatefulSet"]
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (c,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    port = int(env["TOLLGATE_HTTP_LISTEN"].rsplit(":", 1)[1])
    assert env["TOLLGATE_HTTP_LISTEN"].startswith("0.0.0.0:")
    assert [p["containerPort"] for p in c["ports"] if p["name"] == "http"] == [port]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # Mounts: each env path lies on a volume built from the right source.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}

    def volume_of(path):
        mount = max((m for m in mounts if path == m or path.startswith(m + "/")), key=len)
        return mounts[mount], path[len(mount):].lstrip("/")

    for var, cm, key in (("TOLLGATE_CONFIG", "tollgate-config", "default.toml"),
                         ("TOLLGATE_POLICIES_DIR", "tollgate-policies", ""), ("TOLLGATE_GATES_DIR", "tollgate-gates", "")):
        vol, rest = volume_of(env[var])
        assert volumes[vol]["configMap"]["name"] == cm and rest == key, var
    secret_keys = {p.name for p in secrets.iterdir()}
    for var in ("SAVE_HMAC_SECRET_FILE", "AUTH_TOKENS_FILE"):
        vol, rest = volume_of(env[var])
        items = {i["path"]: i["key"] for i in volumes[vol]["secret"]["items"]}
        assert items[rest] in secret_keys, f"{var}: key {items[rest]} is not one deploy-secrets.sh writes"
    # One volume per pod for its decision log and rollups, where the image writes them.
    _, workdir, volume = dockerfile_env()
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert mounts[volume] == claim["metadata"]["name"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and pod["spec"]["securityContext"]["runAsNonRoot"]

    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    for s in services.values():
        assert s["spec"]["selector"].items() <= labels.items()
        assert [p["targetPort"] for p in s["spec"]["ports"]] == ["http"]
    (pdb,) = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    # The ServiceMonitor (monitoring.coreos.com/v1): selects exactly one
    # Service, a port it has, the scrape token from the pods' Secret.
    (sm,) = kinds["ServiceMonitor"]
    assert set(sm["spec"]) == {"selector", "endpoints"}
    picked = [s for s in services.values() if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert len(picked) == 1, [s["metadata"]["name"] for s in picked]
    (ep,) = sm["spec"]["endpoints"]
    assert set(ep) <= {"port", "path", "interval", "authorization"}
    assert ep["port"] in {p["name"] for p in picked[0]["spec"]["ports"]} and ep["path"] == "/metrics"
    assert re.fullmatch(r"\d+[smh]", ep["interval"])
    cred = ep["authorization"]["credentials"]
    assert ep["authorization"]["type"] == "Bearer"
    assert cred["name"] == volumes[volume_of(env["AUTH_TOKENS_FILE"])[0]]["secret"]["secretName"]
    assert cred["key"] in secret_keys


def test_kubectl_kustomize_builds_the_same_resources():
    """Where kubectl is installed, its kustomize agrees with the build above."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed (the schema checks above do not need it)")
    r = subprocess.run([kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(K8S)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    theirs = [d for d in yaml.safe_load_all(r.stdout) if d]
    ours = kustomize_build()
    key = lambda d: (d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"]))
    assert sorted(map(key, theirs)) == sorted(map(key, ours))
    for t in theirs:
        (o,) = [d for d in ours if key(d) == key(t)]
        if t["kind"] == "ConfigMap":
            assert t["data"] == o["data"]
        assert t["metadata"]["labels"] == o["metadata"]["labels"], key(t)


def test_generated_secrets_work_with_a_real_run(pipeline, secrets):
    """deploy-secrets.sh's files, as the deployments pass them: the signing
    key and token file from files; the scrape token reads /metrics only."""
    tokens = json.loads((secrets / "tokens.json").read_text())
    scrape = (secrets / "scrape-token").read_text().strip()
    assert tokens[scrape] == {"operator": True, "scopes": ["metrics.scrape"], "subject": "prometheus"}
    (operator,) = [t for t, e in tokens.items() if e["scopes"] == ["admin"]]
    for k in ("SAVE_HMAC_SECRET", "AUTH_TOKENS_JSON"):
        pipeline.env.pop(k, None)
    pipeline.env.update(SAVE_HMAC_SECRET_FILE=str(secrets / "hmac-secret"), SAVE_HMAC_KEY_ID="k1",
                        AUTH_TOKENS_FILE=str(secrets / "tokens.json"))
    pipeline.start("--idle-timeout-secs", "2")
    pipeline.wait_api("/healthz")
    assert pipeline.api("GET", "/metrics", token=scrape)[0] == 200
    assert pipeline.api("GET", "/metrics")[0] == 401
    assert pipeline.api("GET", "/v1/usage?tenant=acme", token=scrape)[0] == 403
    assert pipeline.api("GET", "/v1/usage?tenant=acme", token=operator)[0] == 200
    assert pipeline.api("GET", "/metrics", token=operator)[0] == 200
