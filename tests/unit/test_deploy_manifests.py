"""deploy/kubernetes: valid against the Kubernetes schemas (offline), and consistent with the code.

The schemas ship inside the `kubernetes-validate` package, so this runs without a cluster or a
network. Beyond the schemas, it checks what a schema cannot: selectors that select, ports and
keys that exist, probes on the right ports, one pinned image, and settings the service reads.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ticketing_service.adapters.db.pool import PoolSettings
from ticketing_service.config import Config, ConfigError
from ticketing_service.entrypoints.grpc.arrival import DRAIN_SECONDS
from ticketing_service.entrypoints.grpc.exposure import is_loopback
from ticketing_service.entrypoints.grpc.server import GRACE_SECONDS, SERVICE_NAME
from ticketing_service.entrypoints.webhook.app import HEALTH_PATH
from ticketing_service.entrypoints.webhook.serve import GRACEFUL_SHUTDOWN_SECONDS
from ticketing_service.webhook_config import WebhookConfig

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# preStop sleep needs 1.30; the oldest Kubernetes these manifests are checked against.
KUBERNETES_VERSION = "1.30"
# The Secret's template, and the Job a restore runs by hand (docs/operations.md).
NOT_APPLIED_BY_KUSTOMIZE = {"secret.example.yaml", "kustomization.yaml", "reconcile-job.yaml"}
COMPONENT = "app.kubernetes.io/component"

Manifest = dict[str, Any]


def documents() -> list[tuple[str, Manifest]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((path.name, document))
    return found


def objects() -> list[Manifest]:
    return [doc for _, doc in documents() if doc["kind"] != "Kustomization"]


def of_kind(kind: str) -> list[Manifest]:
    return [obj for obj in objects() if obj["kind"] == kind]


def one(kind: str, name: str) -> Manifest:
    [found] = [obj for obj in of_kind(kind) if obj["metadata"]["name"] == name]
    return found


def pod_specs() -> Iterator[tuple[str, Manifest]]:
    for obj in objects():
        if obj["kind"] in {"Deployment", "Job"}:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj["metadata"]["name"], obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, Manifest]]:
    for name, spec in pod_specs():
        for container in spec["containers"]:
            yield name, container


def env_value(container: Manifest, name: str) -> str:
    [value] = [e["value"] for e in container.get("env", []) if e["name"] == name]
    return str(value)


def config() -> dict[str, str]:
    return dict(one("ConfigMap", "ticketing-config")["data"])


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def source_text() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "ticketing_service").rglob("*.py"))


@pytest.mark.parametrize(("file", "manifest"), documents(), ids=lambda v: str(v)[:40])
def test_every_manifest_is_valid_against_the_kubernetes_schema(
    file: str, manifest: Manifest
) -> None:
    if manifest["kind"] == "Kustomization":
        return  # not a cluster object; checked against the file list below
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_misspelled_field() -> None:
    broken = copy.deepcopy(one("Deployment", "ticketing-server"))
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_no_manifest_pins_a_namespace_and_every_one_is_labelled() -> None:
    for obj in objects():
        assert "namespace" not in obj["metadata"], obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "ticketing-service"


def test_kustomize_applies_every_manifest_but_the_secret_template() -> None:
    [kustomization] = [doc for _, doc in documents() if doc["kind"] == "Kustomization"]
    expected = {p.name for p in MANIFESTS.glob("*.yaml")} - NOT_APPLIED_BY_KUSTOMIZE
    assert set(kustomization["resources"]) == expected
    [image] = kustomization["images"]
    # The release's tag set there reaches every container, the migration Job's included.
    assert {image["name"]} == {c["image"].rsplit(":", 1)[0] for _, c in containers()}


def selected(selector: str) -> set[tuple[str, str]]:
    """The objects `kubectl apply -k ... -l <selector>` applies (`key=value` or `key!=value`)."""
    match = re.fullmatch(r"([\w./-]+)(!?)=([\w.-]+)", selector)
    assert match, selector
    key, negated, value = match.groups()
    return {
        (obj["kind"], obj["metadata"]["name"])
        for obj in objects()
        if obj["kind"] != "Secret"
        and (obj["metadata"].get("labels", {}).get(key) == value) != bool(negated)
    }


def rollout_steps() -> list[str]:
    """The label selector of each `apply -k` of the runbook's release steps, in order ("" for
    one with none); its rollback, a section of its own, is left out."""
    runbook = (ROOT / "docs" / "operations.md").read_text()
    release = runbook.split("## Roll out a release that migrates the database")[1]
    release = release.split("### Roll back a release")[0]
    return re.findall(r"apply -k deploy/kubernetes(?: -l '?([^'\s]+)'?)?", release)


def test_the_rollout_selects_the_config_then_the_job_then_all_but_the_job() -> None:
    """docs/operations.md applies the kustomization in steps: the ConfigMap the Job reads, the
    Job alone (waited for), then everything else, so no Deployment rolls before the schema."""
    steps = rollout_steps()
    assert steps == [f"{COMPONENT}=config", f"{COMPONENT}=migrate", f"{COMPONENT}!=migrate"]
    config, job, rest = (selected(step) for step in steps)

    assert config == {("ConfigMap", "ticketing-config")}
    assert job == {("Job", "ticketing-migrate")}
    assert rest == {(o["kind"], o["metadata"]["name"]) for o in objects()} - job - {
        ("Secret", "ticketing-secrets")
    }


def test_the_deploy_readme_points_at_the_runbooks_steps_not_a_plain_apply() -> None:
    # It said a plain `apply -k` left the Job out: kustomize applies it with the rest.
    readme = (ROOT / "deploy" / "README.md").read_text()
    steps = rollout_steps()
    assert f"-l {steps[0]}" in readme
    assert all(f"`{step.removeprefix(COMPONENT)}`" in readme for step in steps[1:])
    assert "docs/operations.md" in readme
    assert not re.search(r"applies all but the Job", readme)


def pod_labels() -> dict[str, dict[str, str]]:
    """The labels of each workload's pods, by workload name."""
    templates = {
        obj["metadata"]["name"]: obj["spec"]["jobTemplate"]["spec"]["template"]
        if obj["kind"] == "CronJob"
        else obj["spec"]["template"]
        for obj in objects()
        if obj["kind"] in {"Deployment", "Job", "CronJob"}
    }
    return {name: template["metadata"]["labels"] for name, template in templates.items()}


def matches(selector: str, labels: dict[str, str]) -> bool:
    """Whether `labels` meet a label selector of `key=value` and `key in (a,b)` terms."""
    for term in re.split(r",(?![^(]*\))", selector):  # the commas outside parentheses
        match = re.fullmatch(r"([\w./-]+)(?:=([\w.-]+)| in \(([\w.,-]+)\))", term.strip())
        assert match, term
        key, value, values = match.groups()
        if labels.get(key) not in (values.split(",") if values else [value]):
            return False
    return True


def test_the_runbooks_log_recipe_reads_every_line_of_the_server_and_the_shim() -> None:
    # With -l, `kubectl logs` shows the last 10 lines of each pod unless given --tail=-1.
    runbook = (ROOT / "docs" / "operations.md").read_text()
    [recipe] = [b for b in re.findall(r"```sh\n(.*?)```", runbook, re.S) if "request_id" in b]
    assert '-n "$NS"' in recipe
    assert "--tail=-1" in recipe
    [selector] = re.findall(r"-l '([^']+)'", recipe)
    read = {name for name, labels in pod_labels().items() if matches(selector, labels)}
    assert read == {"ticketing-server", "ticketing-webhook"}


def test_every_container_runs_one_pinned_image() -> None:
    images = {container["image"] for _, container in containers()}
    [image] = images
    name, _, tag = image.rpartition(":")
    assert name
    assert tag not in {"", "latest"}


def test_every_container_has_requests_and_a_memory_limit() -> None:
    for name, container in containers():
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), name
        assert "memory" in resources["limits"], name


def test_every_pod_runs_as_a_non_root_user_without_privilege_escalation() -> None:
    for name, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name


def test_the_server_runs_two_replicas_without_migrating() -> None:
    server = one("Deployment", "ticketing-server")
    [container] = server["spec"]["template"]["spec"]["containers"]
    assert server["spec"]["replicas"] == 2
    assert container["args"][:2] == ["serve", "--no-migrate"]


def test_the_migration_job_runs_migrate_once_without_queueing_queries_behind_its_locks() -> None:
    job = one("Job", "ticketing-migrate")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert int(env_value(container, "TICKETING_DB_LOCK_TIMEOUT_MS")) > 0


def test_the_restores_reconcile_job_has_what_reconcile_needs_and_asks_again_when_unanswered() -> (
    None
):
    # The runbook ran `reconcile --since` while the replicas were stopped, with no pod to run it
    # in; a Job like the migration's lacked the payment service's token, and refused to start.
    job = one("Job", "ticketing-reconcile")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["reconcile", "--since"]
    passed = {e["name"] for e in container["env"]} | set(config())
    settings = {k: v for k, v in (config() | REAL_SETTINGS | REAL_SECRETS).items() if k in passed}
    Config.from_env(settings).require_payment_service()
    assert job["spec"]["backoffLimit"] > 0  # exit 3: some checkouts went unasked


def test_the_event_feed_is_pruned_daily_and_never_by_two_jobs_at_once() -> None:
    cron = one("CronJob", "ticketing-prune-events")
    [container] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["prune-events", "--older-than-days"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    # At one hour of the day wherever the control plane runs, and never long after it.
    assert cron["spec"]["timeZone"] == "Etc/UTC"
    assert 0 < cron["spec"]["startingDeadlineSeconds"] <= 3600


def test_the_server_probes_use_the_plaintext_health_port_it_listens_on() -> None:
    [container] = one("Deployment", "ticketing-server")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["health"] == port_of(config()["TICKETING_HEALTH_LISTEN"])
    assert ports["grpc"] == port_of(container["args"][container["args"].index("--listen") + 1])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["health"], probe
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    # Alive is the server as a whole, which a database outage leaves SERVING (serving.py):
    # restarting every replica while Postgres is away would mend nothing.
    for probe in ("startupProbe", "livenessProbe"):
        assert "service" not in container[probe]["grpc"], probe


def test_the_shim_is_ready_only_when_its_health_route_is() -> None:
    [container] = one("Deployment", "ticketing-webhook")["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == HEALTH_PATH
    assert container["livenessProbe"]["tcpSocket"]["port"] == "http"


def test_metrics_are_exposed_where_the_processes_serve_them() -> None:
    metrics_port = port_of(config()["TICKETING_METRICS_LISTEN"])
    for name, container in containers():
        if name in {"ticketing-migrate", "ticketing-prune-events", "ticketing-reconcile"}:
            continue  # one-off commands serve no metrics
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == metrics_port, name


def test_the_shim_targets_the_server_service_by_name_and_port() -> None:
    host, port = config()["TICKETING_GRPC_TARGET"].rsplit(":", 1)
    service = one("Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}


def test_every_service_and_budget_selects_the_pods_of_a_deployment() -> None:
    deployments = of_kind("Deployment")
    for deployment in deployments:
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    for obj in of_kind("Service") + of_kind("PodDisruptionBudget"):
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        selected = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, obj["metadata"]["name"]
        if obj["kind"] == "Service":
            [container] = selected[0]["spec"]["template"]["spec"]["containers"]
            named = {p["name"] for p in container["ports"]}
            assert {p["targetPort"] for p in obj["spec"]["ports"]} <= named


def test_every_secret_reference_names_a_key_of_the_secret_template() -> None:
    secret = one("Secret", "ticketing-secrets")
    for name, container in containers():
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "ticketing-secrets", name
                assert ref["key"] in secret["stringData"], (name, ref["key"])
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] == "ticketing-config", name


def test_the_secret_template_holds_no_real_secret() -> None:
    for key, value in one("Secret", "ticketing-secrets")["stringData"].items():
        # The Standard Webhooks placeholder must be whsec_ + base64 to pass the shim's checks;
        # it decodes to "REPLACE_ME".
        assert "REPLACE_ME" in value or value == "whsec_UkVQTEFDRV9NRQ==", key


# A real value of the shape of each placeholder of the secret template.
REAL_SECRETS = {
    "DATABASE_URL": "postgresql://ticketing:s3cr3t-pa55@postgres:5432/ticketing",
    "TICKETING_GRPC_TOKEN": "3f1c9a7e5b2d4f60",
    "TICKET_PAYMENT_SERVICE_TOKEN": "9b8a7c6d5e4f3a21",
    "TICKET_PAYMENT_CALLBACK_SECRET": "c2VjcmV0LWhtYWMta2V5",
    "TICKETING_STANDARD_WEBHOOK_SECRETS": "whsec_" + base64.b64encode(b"a-signing-key").decode(),
}


# A real value for each placeholder of the ConfigMap.
REAL_SETTINGS = {
    "TICKETING_CALLBACK_URL": "https://ticketing-webhooks.moim.social/api/ticket-payment-callbacks",
    "MOIM_PUBLIC_BASE_URL": "https://moim.social",
    "DEFAULT_PORTONE_PROVIDER_ACCOUNT_ID": "store-6a1f0c2e",
}


def test_the_settings_the_manifests_pass_are_taken_by_the_server_and_the_shim() -> None:
    # Each placeholder of the templates replaced by a real value of the same shape.
    placeholders = one("Secret", "ticketing-secrets")["stringData"]
    assert set(REAL_SECRETS) == set(placeholders)
    assert {k for k, v in config().items() if "REPLACE_ME" in v} == set(REAL_SETTINGS)
    settings = config() | REAL_SETTINGS | REAL_SECRETS
    server = Config.from_env(settings)
    assert server.database_url == settings["DATABASE_URL"]
    shim = WebhookConfig.from_env(settings)
    assert shim.grpc_target == settings["TICKETING_GRPC_TARGET"]
    assert shim.standard_secrets == (REAL_SECRETS["TICKETING_STANDARD_WEBHOOK_SECRETS"],)


@pytest.mark.parametrize(
    ("key", "reader"),
    [
        ("DATABASE_URL", Config),
        ("TICKETING_GRPC_TOKEN", Config),
        ("TICKETING_GRPC_TOKEN", WebhookConfig),
        ("TICKET_PAYMENT_SERVICE_TOKEN", Config),
        ("TICKET_PAYMENT_CALLBACK_SECRET", WebhookConfig),
        ("TICKETING_STANDARD_WEBHOOK_SECRETS", WebhookConfig),
    ],
)
def test_each_placeholder_of_the_secret_template_is_refused_by_what_reads_it(
    key: str, reader: type[Config] | type[WebhookConfig]
) -> None:
    # Anyone can read the template: a shim started with its secret took forged callbacks.
    placeholder = one("Secret", "ticketing-secrets")["stringData"][key]
    settings = config() | REAL_SETTINGS | REAL_SECRETS | {key: placeholder}
    with pytest.raises(ConfigError, match=f"^{key} holds the deploy templates' placeholder"):
        reader.from_env(settings)


@pytest.mark.parametrize("key", sorted(REAL_SETTINGS))
def test_each_placeholder_of_the_configmap_is_refused_by_the_server(key: str) -> None:
    # They were examples the server took: every payment callback sent to a host that does not
    # exist (a payment confirmed only by reconciliation, minutes later), payers sent back to
    # moim.example, and a made-up PortOne store id sent with each checkout.
    settings = config() | REAL_SETTINGS | REAL_SECRETS | {key: config()[key]}
    with pytest.raises(ConfigError, match=f"^{key} holds the deploy templates' placeholder"):
        Config.from_env(settings)


def test_an_hmac_only_shim_may_leave_the_standard_webhooks_secret_out() -> None:
    [shim] = [c for name, c in containers() if name == "ticketing-webhook"]
    [ref] = [
        e["valueFrom"]["secretKeyRef"]
        for e in shim["env"]
        if e["name"] == "TICKETING_STANDARD_WEBHOOK_SECRETS"
    ]
    assert ref.get("optional") is True
    hmac_only = config() | {k: v for k, v in REAL_SECRETS.items() if "STANDARD" not in k}
    assert WebhookConfig.from_env(hmac_only).standard_secrets == ()


def test_every_setting_the_manifests_pass_is_one_the_service_reads() -> None:
    code = source_text()
    names = set(config()) | set(one("Secret", "ticketing-secrets")["stringData"])
    names |= {env["name"] for _, c in containers() for env in c.get("env", [])}
    for name in sorted(names):
        assert re.search(rf"[\"']{name}[\"']", code), f"{name} is not read by the service"


def test_pods_get_enough_time_to_finish_in_flight_work_when_stopped() -> None:
    # The server's longest stop: the drain of calls still coming, its calls' grace, then
    # closing its pool's idle connections together, each waiting at most the connect timeout
    # for a silent database's goodbye.
    server_stop = DRAIN_SECONDS + GRACE_SECONDS + PoolSettings().connect_timeout_seconds
    grace = {"ticketing-server": server_stop, "ticketing-webhook": GRACEFUL_SHUTDOWN_SECONDS}
    for name, seconds in grace.items():
        spec = one("Deployment", name)["spec"]["template"]["spec"]
        [container] = spec["containers"]
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert spec["terminationGracePeriodSeconds"] > pre_stop + seconds, name


def test_the_server_listens_beyond_loopback_only_behind_a_token_and_mutual_tls() -> None:
    [server] = [c for name, c in containers() if name == "ticketing-server"]
    listen = server["args"][server["args"].index("--listen") + 1]
    names = {e["name"] for e in server["env"]}
    sources = {e["configMapRef"]["name"] for e in server["envFrom"]}
    assert not is_loopback(listen)  # so `serve` demands a guard
    assert {"TICKETING_GRPC_TOKEN", "TICKETING_TLS_CLIENT_CA"} <= names
    assert "--insecure" not in server["args"]
    assert sources == {"ticketing-config"}
    assert config()["TICKET_PAYMENT_SERVICE_URL"].startswith(("http://", "https://"))


def admitted(policy: Manifest, port: str) -> list[Manifest]:
    """The `from` peers of every rule of `policy` that opens `port` (`{}` for any peer)."""
    peers: list[Manifest] = []
    for rule in policy["spec"]["ingress"]:
        if port in {p["port"] for p in rule["ports"]}:
            peers += rule.get("from", [{}])
    return peers


def test_each_network_policy_guards_the_pods_of_a_deployment_on_ports_they_serve() -> None:
    deployments = {d["metadata"]["name"]: d["spec"]["template"] for d in of_kind("Deployment")}
    guarded = set()
    for policy in of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]["matchLabels"]
        [name] = [
            n for n, t in deployments.items() if selector.items() <= t["metadata"]["labels"].items()
        ]
        guarded.add(name)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        [container] = deployments[name]["spec"]["containers"]
        served = {p["name"] for p in container["ports"]}
        opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        # Every port but the health port (probes come from the pod's own node) is reachable.
        assert opened == served - {"health"}, name
    assert guarded == set(deployments)


def test_only_the_moim_backend_and_the_shim_may_call_the_server() -> None:
    shim = one("Deployment", "ticketing-webhook")["spec"]["template"]["metadata"]["labels"]
    peers = admitted(one("NetworkPolicy", "ticketing-server"), "grpc")
    selectors = [peer["podSelector"]["matchLabels"] for peer in peers]
    assert len(selectors) == 2
    assert any(s.items() <= shim.items() for s in selectors)
    assert all(peer.keys() == {"podSelector"} for peer in peers)  # no namespace, no address


def test_metrics_are_scraped_only_from_the_monitoring_namespace() -> None:
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    for policy in of_kind("NetworkPolicy"):
        [peer] = admitted(policy, "metrics")
        assert peer == {"namespaceSelector": {"matchLabels": monitoring}}
