"""A real kube-apiserver + etcd for integration tests (docs: shared/docs/real-kube-apiserver.md).

Reusable by any test package: `from apiserver import apiserver` in a conftest (after putting
tests/ on sys.path) registers the session fixture. The server is a singleton per process, so
several conftests share one. No kubelet, scheduler or controller-manager run: tests play the
Job controller with the helpers at the bottom (`finish_job`, `terminated_pod`).

If the binary cannot be built or found, tests using the fixture FAIL, unless the environment
sets STEPSHOT_SKIP_APISERVER=1, which turns that into a skip.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "scripts" / "build-kube.sh"
DEFAULT_USERS = {"alice": ["stepshot:users"], "bob": []}  # extra token users for RBAC tests


def wait_for(predicate, timeout: float = 20, what: str = "condition", interval: float = 0.02):
    """predicate()'s first truthy value, polled every `interval` s; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary() -> str:
    """$STEPSHOT_KUBE_APISERVER, or the cached/built binary from scripts/build-kube.sh."""
    explicit = os.environ.get("STEPSHOT_KUBE_APISERVER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RuntimeError(f"STEPSHOT_KUBE_APISERVER={explicit} is not an executable")
        return explicit
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True)
    folder = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    path = os.path.join(folder, "kube-apiserver")
    if proc.returncode != 0 or not os.access(path, os.X_OK):
        raise RuntimeError(f"{BUILD_SCRIPT} failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    return path


class ApiServer:
    def __init__(self, binary: str, users: dict[str, list[str]] | None = None):
        self.binary = binary
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.dir = Path(tempfile.mkdtemp(prefix="stepshot-apiserver-"))
        self.tokens = {"admin": secrets.token_hex(16), **{u: secrets.token_hex(16) for u in self.users}}
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.kubeconfig = self.kubeconfig_for("admin")

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60) -> "ApiServer":
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # never leave etcd/apiserver behind a failed start
            raise

    def _start(self, timeout: float) -> "ApiServer":
        etcd = shutil.which("etcd")
        if not etcd:
            raise RuntimeError("etcd not found (apt-get install etcd-server)")
        d = self.dir
        # token,user,uid[,"group1,group2"]
        lines = [",".join([tok, user, user] + ([f'"{",".join(self.groups(user))}"'] if self.groups(user) else []))
                 for user, tok in self.tokens.items()]
        (d / "tokens.csv").write_text("\n".join(lines) + "\n")
        subprocess.run(["openssl", "genrsa", "-out", str(d / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub")],
                       check=True, capture_output=True)
        client, peer = free_port(), free_port()
        self._spawn("etcd", [etcd, "--data-dir", str(d / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}"])
        self._spawn("apiserver", [
            self.binary, f"--etcd-servers=http://127.0.0.1:{client}", f"--secure-port={self.port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--cert-dir={d / 'certs'}",
            f"--token-auth-file={d / 'tokens.csv'}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited: {self._log(proc)}")
            if self._ready():
                return self
            time.sleep(0.5)
        raise RuntimeError(f"kube-apiserver not ready after {timeout}s: {self._log(self.procs[-1])}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))

    def _log(self, proc: subprocess.Popen) -> str:
        name = "etcd" if proc is self.procs[0] else "apiserver"
        return (self.dir / f"{name}.log").read_text(errors="replace")[-3000:]

    def _ready(self) -> bool:
        proc = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), "get", "--raw", "/readyz"],
                              capture_output=True, text=True)
        return proc.returncode == 0 and proc.stdout.strip() == "ok"

    # ------------------------------------------------------------------ identities
    def groups(self, user: str) -> list[str]:
        return ["system:masters"] if user == "admin" else self.users.get(user, [])

    def kubeconfig_for(self, user: str, token: str | None = None) -> Path:
        path = self.dir / f"kubeconfig-{user}"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": user,
            "clusters": [{"name": "test", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": user, "user": {"token": token or self.tokens[user]}}],
            "contexts": [{"name": user, "context": {"cluster": "test", "user": user}}],
        }))
        return path

    def serviceaccount_kubeconfig(self, namespace: str, name: str) -> Path:
        """Create the ServiceAccount if needed and a kubeconfig with a TokenRequest token for it."""
        from kubernetes import client
        core = client.CoreV1Api(self.client())
        try:
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        token = core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"audiences": ["https://kubernetes.default.svc"]}}).status.token
        return self.kubeconfig_for(f"system-serviceaccount-{namespace}-{name}", token)

    def client(self, user: str = "admin"):
        import urllib3
        from kubernetes import config
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # self-signed test server
        return config.new_client_from_config(config_file=str(self.kubeconfig_for(user)))

    def env(self) -> dict[str, str]:
        """Environment for subprocesses (operator, kubectl) pointed at this server as admin."""
        # the test server's certificate is self-signed (insecure-skip-tls-verify)
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONWARNINGS="ignore:Unverified HTTPS request")

    # ------------------------------------------------------------------ objects
    def apply_crd(self, crd: dict, timeout: float = 30) -> None:
        from kubernetes import client
        ext = client.ApiextensionsV1Api(self.client())
        try:
            ext.create_custom_resource_definition(crd)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        name = crd["metadata"]["name"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conds = ext.read_custom_resource_definition(name).status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conds):
                return
            time.sleep(0.2)
        raise RuntimeError(f"CRD {name} not established")

    def create_namespace(self, name: str) -> str:
        from kubernetes import client
        client.CoreV1Api(self.client()).create_namespace({"metadata": {"name": name}})
        return name


_SERVER: ApiServer | None = None


@pytest.fixture(scope="session")
def apiserver(request: pytest.FixtureRequest) -> ApiServer:
    """The session's API server with the SupernetTraining CRD applied."""
    global _SERVER
    if _SERVER is None:
        try:
            server = ApiServer(find_binary()).start()
        except Exception as exc:  # noqa: BLE001 - reported as a failure (or an explicit skip)
            message = f"real kube-apiserver unavailable: {exc}"
            if os.environ.get("STEPSHOT_SKIP_APISERVER") == "1":
                pytest.skip(message + " (STEPSHOT_SKIP_APISERVER=1)")
            pytest.fail(message + "\nSet STEPSHOT_SKIP_APISERVER=1 to skip these tests explicitly.",
                        pytrace=False)
        request.session.config.add_cleanup(server.stop)
        from kubernetes.client import ApiException
        from stepshot.spec import crd
        try:
            server.apply_crd(crd())
        except ApiException as exc:
            pytest.fail(f"the API server refused the SupernetTraining CRD: {exc.body}", pytrace=False)
        _SERVER = server
    return _SERVER


# ---------------------------------------------------------------------- playing the Job controller

def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def finish_job(batch, namespace: str, name: str, ok: bool = True) -> None:
    """Write what the Job controller would: Complete (succeeded=1) or Failed (BackoffLimitExceeded)."""
    now = _now()
    cond = {"type": "Complete" if ok else "Failed", "status": "True", "lastProbeTime": now,
            "lastTransitionTime": now}
    status: dict = {"startTime": now, "conditions": [cond]}
    if ok:
        status.update(succeeded=1, completionTime=now)
    else:
        cond.update(reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
        status.update(failed=1)
    batch.patch_namespaced_job_status(name, namespace, {"status": status})


def result_message(labels: dict, tau: float = 0.6123) -> str | None:
    """The termination message the real command of a Job with these labels writes: built by the
    same code (stepshot.workdir), so the fakes cannot drift from `stepshot snapshot`/`evaluate`."""
    from stepshot.workdir import EvaluationResult, SnapshotResult
    from stepshot import manifests

    component = labels.get(manifests.LABEL_COMPONENT)
    if component == "snapshot":
        stage = labels[manifests.LABEL_STAGE]
        return SnapshotResult(stage=stage, partition=labels[manifests.LABEL_PARTITION], epoch=3,
                              file=f"{stage}/checkpoints/epoch-0003.pt", sha256="0" * 64).message()
    if component == "evaluate":
        return EvaluationResult(n=50, kendall_tau=tau, spearman=0.8, pearson=0.79).message()
    return None


def terminated_pod(core, job: dict, message: str, exit_code: int = 0, owned: bool = True) -> None:
    """A pod of `job` whose container terminated with `message` (the kubelet's part); with
    owned=False a pod that only carries the Job's labels (not controlled by it)."""
    template = job["spec"]["template"] if isinstance(job, dict) else job.spec.template.to_dict()
    meta = job["metadata"] if isinstance(job, dict) else job.metadata.to_dict()
    labels = (template.get("metadata") or {}).get("labels") or {}
    container = template["spec"]["containers"][0]
    name = f"{meta['name']}-pod{secrets.token_hex(2)}"
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"], "controller": True}
    core.create_namespaced_pod(meta["namespace"], {
        "metadata": {"name": name, "labels": labels, **({"ownerReferences": [owner]} if owned else {})},
        "spec": {"restartPolicy": "Never", "containers": [{"name": container["name"], "image": container["image"]}]}})
    now = _now()
    core.patch_namespaced_pod_status(name, meta["namespace"], {"status": {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "containerStatuses": [{"name": container["name"], "image": container["image"], "imageID": "",
                               "ready": False, "restartCount": 0,
                               "state": {"terminated": {"exitCode": exit_code, "message": message,
                                                        "startedAt": now, "finishedAt": now}}}]}})


def stub_crd(group: str, kind: str, plural: str, version: str = "v1") -> dict:
    """A CRD that serves `kind` without a schema (a third party's kind the chart creates objects of)."""
    meta: dict = {"name": f"{plural}.{group}"}
    if group.endswith(".k8s.io"):  # protected group: the real CRD carries this annotation too
        meta["annotations"] = {
            "api-approved.kubernetes.io": "https://github.com/kubernetes-csi/external-snapshotter/pull/419"}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": meta,
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                     "versions": [{"name": version, "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {
                                       "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
