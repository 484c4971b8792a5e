"""The chart's monitoring against a real Prometheus (Debian's server, tests/promserver.py).

The chart is installed into the real API server with every monitor on; its PodMonitor,
ServiceMonitor and PrometheusRule, read back as installed, configure the Prometheus (scrape jobs
by prometheus-operator's rules, the rules as rule files). Process level, on loopback: the stage
processes of a real `stepshot run` (Fashion-MNIST, trainLimit 16384, one thread) stand in for
the stage pods, and the real operator runs out of the cluster with the Deployment's arguments;
both are file_sd targets with the `__meta_kubernetes_*` labels the pod and the Service would
have. The operator handles a SupernetTraining of the same plan; as there is no kubelet, the test
completes each of its Jobs when the local run has finished that part, with the termination
message the local command produced (a second resource's Job fails). Pods, their network and
the discovery from a real API server: tests/node/test_monitoring.py. The alerts' logic over hours
is exercised with `promtool test rules` on synthetic series.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from apiserver import free_port, wait_for  # tests/ is on sys.path (conftest)
from promserver import (PodTarget, Prometheus, dashboard_queries, logged_rates, matched_in_order, rule_groups,
                        scrape_jobs, substitute)
from promtool import promtool_path
from stepshot_trainer.progress import METRICS_SECONDS
from test_chart import (GROUP, PLURAL, VERSION, _apply_crd, _crd, _install, _operator_args,  # noqa: F401
                        _uninstall, cluster)

ROOT = Path(__file__).resolve().parents[2]
NS_RELEASE, RUN, FAILING = "ss-prom", "prom-run", "prom-fail"
NS_RUN = NS_RELEASE      # the operator watches its release namespace
GROUND_TRUTH = ROOT / "benchmarks" / "groundtruth" / "resnet48-fmnist.json"
ARCHS = ROOT / "benchmarks" / "archs" / "resnet48-fmnist-64.json"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
# The trainer's periodic log line (STEPSHOT_LOG_SECONDS) on the gauges' window: both windows
# then cover the same steps, so every logged rate must be a value the dashboard shows.
LOG_SECONDS = METRICS_SECONDS

pytestmark = pytest.mark.apiserver


@pytest.fixture(scope="module")
def monitors(cluster):
    """The PodMonitor, ServiceMonitor and PrometheusRule the chart installs (fast intervals)."""
    for kind, plural in (("ServiceMonitor", "servicemonitors"), ("PodMonitor", "podmonitors"),
                         ("PrometheusRule", "prometheusrules")):
        _apply_crd(cluster, _crd("monitoring.coreos.com", kind, plural))
    values = {"monitoring": {"serviceMonitor": {"enabled": True, "interval": "1s", "scrapeTimeout": "1s"},
                             "podMonitor": {"enabled": True, "interval": "500ms", "scrapeTimeout": "500ms"},
                             "prometheusRule": {"enabled": True}}}
    _install(cluster, NS_RELEASE, "stepshot", values)
    custom = cluster["custom"]

    def read(plural: str) -> list[dict]:
        return custom.list_namespaced_custom_object("monitoring.coreos.com", "v1", NS_RELEASE, plural)["items"]
    yield {"pod": read("podmonitors"), "service": read("servicemonitors"), "rules": read("prometheusrules"),
           "cluster": cluster}
    _uninstall(cluster, NS_RELEASE, "stepshot")


def _kept(job: dict, labels: dict[str, str]) -> bool:
    """The keep/drop rules of a scrape job applied to one discovered target (as Prometheus does)."""
    for rule in job["relabel_configs"]:
        if rule.get("action") in ("keep", "drop"):
            value = ";".join(labels.get(s, "") for s in rule["source_labels"])
            if (re.fullmatch(rule["regex"], value) is not None) != (rule["action"] == "keep"):
                return False
    return True


def test_the_monitors_keep_running_stage_pods_of_watched_namespaces_and_the_operator_service(monitors):
    """What the jobs keep of kubernetes_sd's targets (tests/kubesd.py): the PodMonitor a Running
    pod with stepshot.dev/training on its metrics port in a watched namespace (this release is
    rbac.mode=namespaced: its own; the node test's is cluster mode, any namespace); the
    ServiceMonitor the operator's Service in the release namespace."""
    from kubesd import endpoints_targets, pod_targets
    [pod_job, service_job] = scrape_jobs(monitors["pod"], monitors["service"], {"pod": "p.json", "endpoints": "e.json"})

    def pod(namespace: str, labels: dict, phase: str = "Running") -> list[dict]:
        return pod_targets({"metadata": {"name": "x", "namespace": namespace, "labels": labels},
                            "spec": {"containers": [{"name": "trainer", "ports": [
                                {"name": "metrics", "containerPort": 9400}, {"name": "c10d", "containerPort": 29500}]}]},
                            "status": {"podIP": "10.1.1.1", "phase": phase}})
    kept = lambda targets: [t["targets"][0] for t in targets if _kept(pod_job, t["labels"])]  # noqa: E731
    assert kept(pod(NS_RUN, {"stepshot.dev/training": "run"})) == ["10.1.1.1:9400"]
    assert kept(pod(NS_RUN, {"stepshot.dev/training": "run"}, "Succeeded")) == []   # its IP may be reused
    assert kept(pod(NS_RUN, {"app": "other"})) == []
    assert kept(pod("unwatched", {"stepshot.dev/training": "run"})) == []

    def service(namespace: str) -> list[dict]:
        labels = monitors["service"][0]["spec"]["selector"]["matchLabels"]
        return endpoints_targets({"metadata": {"name": "stepshot-metrics", "namespace": namespace},
                                  "subsets": [{"addresses": [{"ip": "10.1.1.2"}], "ports": [{"name": "metrics", "port": 8080}]}]},
                                 {"metadata": {"name": "stepshot-metrics", "labels": labels}}, {})
    assert [t for t in service(NS_RELEASE) if _kept(service_job, t["labels"])]
    assert not [t for t in service("elsewhere") if _kept(service_job, t["labels"])]


# ---------------------------------------------------------------------------------------
# A real run, scraped
def _training(spec: dict, name: str) -> dict:
    """The same plan as the cluster resource the operator handles."""
    doc = copy.deepcopy(spec)
    doc["metadata"] = {"name": name, "namespace": NS_RELEASE}
    doc["spec"]["dataset"]["volume"] = {"persistentVolumeClaim": {"claimName": "fashion-mnist"}}
    doc["spec"]["storage"] = {"claimName": "workdir"}
    return doc


class RunMirror:
    """Plays the Job controller and the kubelet for the operator from the local run: a Job
    completes once the local run has done its part (the stage's DONE marker, its snapshot, the
    evaluation), with the termination message the local command wrote; FAILING's Jobs fail."""

    def __init__(self, cluster, work: Path):
        from stepshot.workdir import Layout

        self.cluster, self.layout, self.done = cluster, Layout(work), set()

    def message(self, component: str, stage: str, evaluation: dict | None) -> str | None:
        from stepshot.workdir import EvaluationResult, SnapshotResult

        if component == "snapshot":
            selected = self.layout.read_selected(stage)
            manifest = json.loads(self.layout.snapshot_manifest(stage).read_text())
            return SnapshotResult(stage=stage, partition=manifest.get("partition", "root"), epoch=selected["epoch"],
                                  file=f"{stage}/checkpoints/{selected['file']}", sha256=manifest["sha256"],
                                  kendall_tau=selected.get("kendall_tau")).message()
        keys = ("n", "kendall_tau", "spearman", "pearson", "evaluated", "scored")
        return EvaluationResult(**{k: evaluation[k] for k in keys}).message()

    def finished(self, component: str, stage: str, evaluation: dict | None) -> bool:
        if component == "train":
            return self.layout.done(stage).exists()
        if component == "snapshot":
            return self.layout.snapshot_manifest(stage).exists()
        return evaluation is not None

    def step(self, evaluation: dict | None = None) -> None:
        from apiserver import finish_job, terminated_pod

        batch, core = self.cluster["batch"], self.cluster["core"]
        for job in batch.list_namespaced_job(NS_RELEASE, label_selector="stepshot.dev/training").items:
            labels = job.spec.template.metadata.labels or {}
            name, component, stage = job.metadata.name, labels["stepshot.dev/component"], labels["stepshot.dev/stage"]
            if name in self.done:
                continue
            if labels["stepshot.dev/training"] == FAILING:
                finish_job(batch, NS_RELEASE, name, ok=False)
            elif self.finished(component, stage, evaluation):
                if component != "train":
                    terminated_pod(core, job, self.message(component, stage, evaluation))
                finish_job(batch, NS_RELEASE, name, ok=True)
            else:
                continue
            self.done.add(name)


def _start_operator(cluster, tmp: Path) -> tuple[subprocess.Popen, int]:
    """The operator with the chart Deployment's arguments, on free loopback ports."""
    dep = cluster["apps"].read_namespaced_deployment("stepshot", NS_RELEASE)
    metrics_port, health_port = free_port(), free_port()
    args = [f"--metrics-port={metrics_port}" if a.startswith("--metrics-port=") else
            f"--liveness=http://127.0.0.1:{health_port}/healthz" if a.startswith("--liveness=") else a
            for a in _operator_args(dep)]
    args = [a if not a.startswith("--metrics-address=") else "--metrics-address=127.0.0.1" for a in args]
    env = cluster["server"].env()
    env.pop("KUBERNETES_SERVICE_HOST", None)
    with open(tmp / "operator.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stepshot_operator", *args, "--resync=1"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, metrics_port


def _spec_doc(tmp: Path, port: int) -> dict:
    archs = tmp / "archs8.json"
    archs.write_text(json.dumps(dict(list(json.loads(ARCHS.read_text()).items())[:8])))
    refs = {"archs": str(archs), "groundTruth": str(GROUND_TRUTH)}
    doc = {"apiVersion": "stepshot.dev/v1alpha1", "kind": "SupernetTraining", "metadata": {"name": RUN},
           "spec": {"space": "resnet48-fmnist",
                    "dataset": {"kind": "fashion-mnist", "path": str(FMNIST), "trainLimit": 16384},   # stages of several 10 s windows
                    "resources": {"nodes": 1, "procsPerNode": 1, "cpu": "1", "memory": "2Gi"},
                    "training": {"batchSize": 64, "seed": 0, "randomSubnets": 0},
                    "oneShot": {"epochs": 2, "lr": 0.1, "warmupEpochs": 0},
                    "fewShot": {"mode": "grouped", "groups": [2], "epochs": 2, "lr": 0.001},
                    "selection": {**refs, "evalImages": 256, "calibrationBatches": 1},
                    "evaluation": {**refs, "calibrationBatches": 1, "calibrationBatchSize": 64, "evalImages": 256},
                    "metricsPort": port}}
    return doc


@pytest.fixture(scope="module")
def scraped_run(monitors, tmp_path_factory):
    """Prometheus scraping a whole `stepshot run` (its stage processes as the stage pods)."""
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST missing: run `make data` (scripts/install-data.sh)")
    tmp = tmp_path_factory.mktemp("prom")
    cluster = monitors["cluster"]
    prom = Prometheus(tmp / "prometheus", monitors["pod"], monitors["service"], monitors["rules"]).start()
    port = free_port()
    operator, operator_port = _start_operator(cluster, tmp)
    doc = _spec_doc(tmp, port)
    (tmp / "run.yaml").write_text(yaml.safe_dump(doc))
    pod_labels = {"stepshot.dev/training": RUN, "app.kubernetes.io/name": "stepshot"}
    service_labels = monitors["service"][0]["spec"]["selector"]["matchLabels"]
    prom.set_targets([PodTarget(f"127.0.0.1:{port}", NS_RUN, f"{RUN}-local", "trainer", "metrics", pod_labels),
                      PodTarget(f"127.0.0.1:{operator_port}", NS_RELEASE, "stepshot-local", "operator", "metrics",
                                service="stepshot-metrics", service_labels=service_labels)])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STEPSHOT_LOG_SECONDS": str(LOG_SECONDS),
           "STEPSHOT_METRICS_LINGER_SECONDS": "10", "STEPSHOT_NO_PROGRESS": "1"}
    custom, mirror = cluster["custom"], RunMirror(cluster, tmp / "work")
    start = time.time()
    try:
        for name in (RUN, FAILING):
            custom.create_namespaced_custom_object(GROUP, VERSION, NS_RELEASE, PLURAL, _training(doc, name))
        with open(tmp / "run.log", "w") as log:
            run = subprocess.Popen([sys.executable, "-m", "stepshot.cli", "run", str(tmp / "run.yaml"), "--workdir",
                                    str(tmp / "work"), "--threads", "1", "--cores", "1"],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 900
            while run.poll() is None:
                assert time.monotonic() < deadline and operator.poll() is None, (tmp / "operator.log").read_text()[-3000:]
                mirror.step()
                time.sleep(0.5)
        text = (tmp / "run.log").read_text()
        assert run.returncode == 0, text[-4000:]
        evaluation = json.loads(next(line for line in reversed(text.splitlines()) if line.startswith('{"predictions"')))

        def succeeded() -> bool:
            mirror.step(evaluation)
            return prom.query(f'stepshot_resource_phase{{name="{RUN}", phase="Succeeded"}} == 1') != []
        wait_for(succeeded, 120, "the operator's Succeeded phase in Prometheus", 0.5)
        wait_for(lambda: prom.query(f'ALERTS{{name="{FAILING}", alertstate="firing"}}'), 120,
                 "StepshotRunFailed firing for the failed run", 0.5)
        yield {"prom": prom, "start": start, "end": time.time(), "log": text, "evaluation": evaluation}
    finally:
        prom.stop()
        operator.terminate()
        operator.wait(30)


def _range(prom: Prometheus, expr: str, run: dict) -> list[dict]:
    return prom.query_range(expr, run["start"], run["end"] + 5, 0.5)


@pytest.mark.slow
def test_the_monitors_become_scrape_jobs_that_find_the_stage_process(scraped_run):
    prom = scraped_run["prom"]
    jobs = {t["labels"]["job"]: t["labels"] for t in prom.targets()}
    # each monitor selects only its own target (the PodMonitor the stage pod, the ServiceMonitor the operator)
    assert set(jobs) == {f"{NS_RELEASE}/stepshot-trainer", f"{NS_RELEASE}/stepshot"}
    target = jobs[f"{NS_RELEASE}/stepshot-trainer"]
    assert target["namespace"] == NS_RUN and target["pod"] == f"{RUN}-local" and target["endpoint"] == "metrics"
    assert jobs[f"{NS_RELEASE}/stepshot"]["service"] == "stepshot-metrics"
    # the chart's relabeling: `name` from the pod label stepshot.dev/training
    series = prom.api("series", **{"match[]": "stepshot_trainer_step", "start": scraped_run["start"],
                                   "end": scraped_run["end"]})
    assert {(s["namespace"], s["name"]) for s in series} == {(NS_RUN, RUN)}


@pytest.mark.slow
def test_every_dashboard_query_returns_data(scraped_run):
    prom, seconds = scraped_run["prom"], scraped_run["end"] - scraped_run["start"]
    empty = []
    for where, expr in dashboard_queries():
        if not _range(prom, substitute(expr, seconds), scraped_run):   # raises on invalid PromQL
            empty.append(f"{where}: {expr}")
    assert not empty, "no data:\n" + "\n".join(empty)


def _stage_range(prom: Prometheus, stage: str, run: dict) -> tuple[float, float]:
    """When the stage's step series moved: first sample and first sample at its planned steps."""
    sel = f'{{namespace="{NS_RUN}", name="{RUN}", stage="{stage}"}}'
    steps = _range(prom, f"max(stepshot_trainer_step{sel})", run)[0]["values"]
    planned = float(_range(prom, f"max(stepshot_trainer_planned_steps{sel})", run)[0]["values"][-1][1])
    done = next(float(t) for t, v in steps if float(v) >= planned)
    return float(steps[0][0]), done


@pytest.mark.slow
def test_dashboard_images_per_second_equals_the_logged_rate(scraped_run):
    """Every rate the trainer's periodic log line printed (all ranks) is, in order, a value of
    "Images/s per stage / partition" (the pods' rates summed by Prometheus) within 10%."""
    prom = scraped_run["prom"]
    panel = next(e for w, e in dashboard_queries() if w.startswith("panel 'Images/s"))
    logged = logged_rates(scraped_run["log"])
    # A fast stage may end before its first periodic line (the epoch line has no window rate).
    assert "oneshot" in logged and set(logged) <= {"oneshot", "g2"}, scraped_run["log"][-2000:]
    for stage, rates in logged.items():
        expr = substitute(panel, 0).replace('stage=~".*"', f'stage="{stage}"')
        [series] = _range(prom, expr, scraped_run)
        pairs = matched_in_order(rates, series["values"])
        for rate, shown in pairs:
            print(f"{stage}: log {rate:.1f} img/s, dashboard {shown:.1f} img/s")
        assert len(pairs) >= max(1, (len(rates) + 1) // 2), (stage, rates, series["values"])


@pytest.mark.slow
def test_progress_moves_during_a_stage_and_ends_at_100_percent(scraped_run):
    prom = scraped_run["prom"]
    panel = next(e for w, e in dashboard_queries() if w.startswith("panel 'Stage progress"))
    series = {s["metric"]["stage"]: [float(v) for _, v in s["values"]]
              for s in _range(prom, substitute(panel, 0), scraped_run)}
    assert set(series) == {"oneshot", "g2"}
    for stage, values in series.items():
        assert values == sorted(values) and len(set(values)) >= 3, (stage, values)
        assert values[-1] == 1.0          # the last step reached Prometheus (the process lingers for it)
    eta = next(e for w, e in dashboard_queries() if w.startswith("panel 'Stage ETA"))
    assert any(float(v) > 0 for s in _range(prom, substitute(eta, 0), scraped_run) for _, v in s["values"])


@pytest.mark.slow
def test_evaluation_and_snapshot_progress_reach_the_end(scraped_run):
    prom = scraped_run["prom"]
    for title in ("Evaluation progress", "Snapshot progress"):
        expr = next(e for w, e in dashboard_queries() if w.startswith(f"panel '{title}") and w.endswith("A"))
        values = [float(v) for s in _range(prom, substitute(expr, 0), scraped_run) for _, v in s["values"]]
        assert values, title
        if title == "Evaluation progress":
            assert max(values) == 1.0
    sizes = _range(prom, 'max by (stage) (stepshot_trainer_snapshot_size_bytes)', scraped_run)
    written = _range(prom, 'max by (stage) (stepshot_trainer_snapshot_written_bytes)', scraped_run)
    served = [line for line in scraped_run["log"].splitlines() if line.startswith("metrics:")]
    assert {s["metric"]["stage"] for s in written} == {"oneshot", "g2"}, served
    for s, w in zip(sorted(sizes, key=lambda s: s["metric"]["stage"]), sorted(written, key=lambda s: s["metric"]["stage"])):
        assert w["values"][-1][1] == s["values"][-1][1]     # every byte written, and seen


@pytest.mark.slow
def test_rules_load_no_alert_fires_on_a_healthy_run_and_the_failed_one_alerts(scraped_run):
    prom = scraped_run["prom"]
    rules = {r["name"]: r for r in prom.rules()}
    assert set(rules) == {"StepshotRunFailed", "StepshotRunStalled", "StepshotOperatorReconcileErrors"}
    assert all(r["health"] == "ok" for r in rules.values()), rules
    alerts = {(s["metric"]["alertname"], s["metric"].get("name")) for s in _range(prom, "ALERTS", scraped_run)}
    assert alerts == {("StepshotRunFailed", FAILING)}


@pytest.mark.slow
def test_the_operator_reports_the_runs_real_tau(scraped_run):
    [tau] = scraped_run["prom"].query(f'stepshot_kendall_tau{{name="{RUN}"}}')
    # the status keeps 4 decimals
    assert float(tau["value"][1]) == pytest.approx(scraped_run["evaluation"]["kendall_tau"], abs=5e-5)


# ---------------------------------------------------------------------------------------
# The alerts' logic, on synthetic series (promtool test rules; time() starts at 0)
def _alert(rules: dict, name: str, labels: dict) -> dict:
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)
    render = lambda text: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)  # noqa: E731
    return {"exp_labels": {**rule["labels"], **labels},
            "exp_annotations": {k: render(v) for k, v in rule["annotations"].items()}}


RUNNING = 'stepshot_resource_phase{namespace="ns", name="run", phase="Running"}'
STAGE_START = 'stepshot_resource_last_progress_timestamp_seconds{namespace="ns", name="run"}'


def _trainer(metric: str, stage: str = "oneshot") -> str:
    return f'stepshot_trainer_{metric}{{namespace="ns", name="run", stage="{stage}", partition="root"}}'


STALL_CASES = {
    # an 8-hour stage stepping every second and reporting every minute: never stalled
    "healthy 8 h stage": ([(RUNNING, "1x480"), (STAGE_START, "0x480"),
                           (_trainer("last_progress_timestamp_seconds"), "0+60x480"),
                           (_trainer("steps_per_second"), "1x480")], "8h", False),
    # the trainer stopped after 1 h: stalledMinutes (30) + 20 one-second steps, then `for: 5m`
    "hung trainer": ([(RUNNING, "1x180"), (STAGE_START, "0x180"),
                      (_trainer("last_progress_timestamp_seconds"), "0+60x60 3600x120"),
                      (_trainer("steps_per_second"), "1x180")], "2h", True),
    # 100 s per step: 20 steps add 33 min, so 58 min without a step is still normal
    "slow steps, 58 min since the last": ([(RUNNING, "1x180"), (STAGE_START, "0x180"),
                                           (_trainer("last_progress_timestamp_seconds"), "0+60x60 3600x120"),
                                           (_trainer("steps_per_second"), "0.01x180")], "118m", False),
    "slow steps, 70 min since the last": ([(RUNNING, "1x180"), (STAGE_START, "0x180"),
                                           (_trainer("last_progress_timestamp_seconds"), "0+60x60 3600x120"),
                                           (_trainer("steps_per_second"), "0.01x180")], "130m", True),
    # a 3-hour evaluation reporting subnets (no steps/s series): not stalled
    "evaluation progressing": ([(RUNNING, "1x180"), (STAGE_START, "0x180"),
                                (_trainer("last_progress_timestamp_seconds", "eval"), "0+60x180")], "3h", False),
    # no stage pod serves metrics (Pending, image pull, rendezvous) and no stage change for 1 h
    "pods pending": ([(RUNNING, "1x60"), (STAGE_START, "0x60")], "1h", True),
    "pods pending 20 min": ([(RUNNING, "1x60"), (STAGE_START, "0x60")], "20m", False),
}


def _promtool_test(rules: dict, tmp: Path, cases: list[dict]) -> subprocess.CompletedProcess:
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                                    "tests": cases}))
    return subprocess.run([promtool_path(), "test", "rules", "tests.yaml"], cwd=tmp, capture_output=True, text=True)


@pytest.mark.parametrize("case", sorted(STALL_CASES))
def test_stall_alert_is_stage_length_aware(monitors, case, tmp_path):
    rules = rule_groups(monitors["rules"])
    series, at, fires = STALL_CASES[case]
    expected = [_alert(rules, "StepshotRunStalled", {"namespace": "ns", "name": "run"})] if fires else []
    test = {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": at, "alertname": "StepshotRunStalled", "exp_alerts": expected}]}
    result = _promtool_test(rules, tmp_path, [test])
    assert result.returncode == 0, result.stdout + result.stderr


def test_failed_run_alert(monitors, tmp_path):
    rules = rule_groups(monitors["rules"])
    failed = 'stepshot_resource_phase{namespace="ns", name="run", phase="Failed"}'
    test = {"interval": "1m", "input_series": [{"series": failed, "values": "0 0 1x10"}],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "StepshotRunFailed", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "StepshotRunFailed",
                 "exp_alerts": [_alert(rules, "StepshotRunFailed", {"namespace": "ns", "name": "run"})]}]}
    result = _promtool_test(copy.deepcopy(rules), tmp_path, [test])
    assert result.returncode == 0, result.stdout + result.stderr
