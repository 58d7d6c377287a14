"""Checks the deploy manifests beyond parsing: the compose file runs three tollgate instances behind nginx on
PostgreSQL and Redis with every secret from the environment; the Kubernetes objects are well formed, probe
/readyz and /healthz, and take every secret from the tollgate-secrets Secret; the Dockerfile's build stage
copies everything the release build reads. Run by .ci/run."""
import pathlib
import re
import sys

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
SECRETS = {"TOLLGATE_ADMIN_TOKEN", "TOLLGATE_SESSION_SECRET", "TOLLGATE_KEY_HASH_SECRET", "TOLLGATE_SIGNING_KEY"}
problems = []

compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
services = compose["services"]
instances = [name for name in services if name.startswith("tollgate-")]
if len(instances) != 3:
    problems.append(f"compose: {len(instances)} tollgate instances, not 3")
for name in instances:
    env = services[name]["environment"]
    for secret in SECRETS:
        if not str(env.get(secret, "")).startswith("${"):
            problems.append(f"compose: {name} {secret} is not taken from the environment")
    if set(services[name]["depends_on"]) != {"postgres", "redis"}:
        problems.append(f"compose: {name} does not wait for postgres and redis")
if set(services["nginx"]["depends_on"]) != set(instances):
    problems.append("compose: nginx does not front every instance")
nginx = (DEPLOY / "nginx.conf").read_text()
for name in instances:
    if f"server {name}:8080" not in nginx:
        problems.append(f"nginx.conf: no upstream {name}")

kinds = {}
for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
    if path.name == "kustomization.yaml":
        listed = set(yaml.safe_load(path.read_text())["resources"])
        continue
    for doc in yaml.safe_load_all(path.read_text()):
        for field in ("apiVersion", "kind", "metadata"):
            if field not in doc:
                problems.append(f"{path.name}: no {field}")
        kinds[doc["kind"]] = (path.name, doc)
missing = {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler"} - set(kinds)
if missing:
    problems.append(f"k8s: missing {sorted(missing)}")
if listed != {name for name, _ in kinds.values()}:
    problems.append("k8s: kustomization.yaml does not list exactly the manifests")
container = kinds["Deployment"][1]["spec"]["template"]["spec"]["containers"][0]
if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
    problems.append("deployment: the readiness probe is not /readyz")
if container["livenessProbe"]["httpGet"]["path"] != "/healthz":
    problems.append("deployment: the liveness probe is not /healthz")
for var in container["env"]:
    if var["name"] != "TOLLGATE_CONFIG" and var.get("valueFrom", {}).get("secretKeyRef", {}).get("name") != "tollgate-secrets":
        problems.append(f"deployment: {var['name']} does not come from the tollgate-secrets Secret")
selector = kinds["Deployment"][1]["spec"]["selector"]["matchLabels"]
for kind in ("Service", "PodDisruptionBudget"):
    spec = kinds[kind][1]["spec"]
    got = spec["selector"] if kind == "Service" else spec["selector"]["matchLabels"]
    if got != selector:
        problems.append(f"{kind}: its selector does not match the Deployment's pods")

# The Dockerfile's build stage copies every path the release build reads: the manifest and lock file, the
# source, the build script, the bench targets the manifest declares (cargo refuses a manifest whose targets are
# missing), and the folders embedded in the binary (`#[folder = "..."]`).
ROOT = DEPLOY.parent
build_stage = re.split(r"^FROM ", (DEPLOY / "Dockerfile").read_text(), flags=re.M)[1]
copied = set()
for line in build_stage.splitlines():
    words = line.split()
    if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
        copied.update(w.rstrip("/") for w in words[1:-1])
needed = {"Cargo.toml", "Cargo.lock", "src"}
if (ROOT / "build.rs").exists():
    needed.add("build.rs")
if "[[bench]]" in (ROOT / "Cargo.toml").read_text():
    needed.add("benches")
for source in (ROOT / "src").rglob("*.rs"):
    for match in re.finditer(r'#\[folder = "([^"/]+)/?"\]', source.read_text()):
        needed.add(match.group(1))
for path in sorted(needed - copied):
    problems.append(f"Dockerfile: the build stage does not copy {path}, which the release build reads")

for problem in problems:
    print(problem)
print(f"deploy: {len(problems)} problems")
sys.exit(1 if problems else 0)
