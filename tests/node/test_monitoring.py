"""The chart's monitoring on the real node: Debian's Prometheus scrapes the operator pod and the
stage pods the way the installed PodMonitor/ServiceMonitor say, while a 2-node run trains.

The chart is installed with every monitor on (1 s intervals). Its PodMonitor, ServiceMonitor
and PrometheusRule, read back from the API server, become the Prometheus configuration
(tests/promserver.py: prometheus-operator's rules); the targets are the real pods and the
operator's Service endpoints, discovered from the API server (tests/kubesd.py, kubernetes_sd's
roles and labels: Debian's build has no Kubernetes discovery) and scraped at their pod IPs over
the node's bridge. One run trains with `resources.nodes: 2` (two pods per training stage,
each serving its own rank's figures), a second one fails at its input.
"""
from __future__ import annotations

import json
import time

import pytest

from apiserver import stub_crd
from kubesd import KubeSD
from localnode import RELEASE_NS, Node, timing, wait_for
from promserver import Prometheus, dashboard_queries, logged_rates, matched_in_order, substitute
from test_multinode import _train_logs
from test_pipeline import RUN, apply, training, wait_phase

MONITORING = {"monitoring": {"serviceMonitor": {"enabled": True, "interval": "1s", "scrapeTimeout": "1s"},
                             "podMonitor": {"enabled": True, "interval": "1s", "scrapeTimeout": "1s"},
                             "prometheusRule": {"enabled": True}}}
NAME, FAILING = "monitored", "monfail"
NS, NS_FAILING = f"nas-monitor-{RUN}", f"nas-monfail-{RUN}"
REFS = {"archs": "../benchmarks/archs/resnet48-fmnist-64.json",
        "groundTruth": "../benchmarks/groundtruth/resnet48-fmnist.json"}
# Two training pods per stage; 8192 images / (64 x 2 ranks) = 64 steps an epoch: stages of
# several of the gauges' 10 s windows, a log line per window (STEPSHOT_LOG_SECONDS).
SPEC = {"dataset": {"trainLimit": 8192}, "oneShot": {"epochs": 2},
        "resources": {"nodes": 2, "cpu": "500m", "memory": "1536Mi"},
        "selection": {**REFS, "evalImages": 128, "calibrationBatches": 1},
        # Every pod, a seconds-long snapshot pod too, waits at exit until a scrape has seen its
        # last figures: set explicitly, the linger does not depend on an earlier scrape (a
        # snapshot pod can end before discovery and the first scrape reach it).
        "scheduling": {"env": [{"name": "STEPSHOT_LOG_SECONDS", "value": "10"},
                               {"name": "STEPSHOT_METRICS_LINGER_SECONDS", "value": "20"}]}}


def _monitoring_kinds(node: Node) -> None:
    for kind, plural in (("ServiceMonitor", "servicemonitors"), ("PodMonitor", "podmonitors"),
                         ("PrometheusRule", "prometheusrules")):
        node.kubectl("apply", "-f", "-", input=json.dumps(stub_crd("monitoring.coreos.com", kind, plural)))
        node.kubectl("wait", "--for=condition=Established", f"crd/{plural}.monitoring.coreos.com", "--timeout=60s")


@pytest.fixture(scope="module")
def scraped(operator, tmp_path_factory):
    node, tmp = operator, tmp_path_factory.mktemp("node-prom")
    _monitoring_kinds(node)
    node.install_chart(tmp, MONITORING)
    read = lambda plural: node.get(plural, "-n", RELEASE_NS)["items"]  # noqa: E731
    prom = Prometheus(tmp / "prometheus", read("podmonitors"), read("servicemonitors"), read("prometheusrules"))
    sd = KubeSD(node.client(), prom.target_files)
    try:
        prom.start()
        sd.start()
        node.work_volume(NS)
        failing_work = node.work_volume(NS_FAILING)
        start = time.time()
        apply(node, training(NAME, NS, **SPEC))
        # The data set's volume is a folder without the data: the one-shot stage fails at once.
        empty = {"hostPath": {"path": str(failing_work), "type": "Directory"}}
        apply(node, training(FAILING, NS_FAILING, backoffLimit=0, dataset={"volume": empty}))
        body = wait_phase(node, NS, NAME, 1200)
        assert body["status"]["phase"] == "Succeeded", body["status"]
        timing("monitored 2-node run (oneshot, g2 as two pods each, snapshots, eval): apply -> Succeeded",
               time.time() - start)
        wait_for(lambda: prom.query(f'stepshot_resource_phase{{name="{NAME}", phase="Succeeded"}} == 1'), 120,
                 "the operator's Succeeded phase in Prometheus", 1)
        wait_for(lambda: prom.query(f'ALERTS{{name="{FAILING}", alertstate="firing"}}'), 180,
                 "StepshotRunFailed firing for the failed run", 1)
        assert sd.error is None, sd.error
        yield {"prom": prom, "start": start, "end": time.time(), "log": "\n".join(_train_logs(node, NS, NAME).values()), "status": body["status"]}
    finally:
        sd.stop()
        prom.stop()
        node.install_chart(tmp)      # the session's operator without monitors for later tests


def _range(run: dict, expr: str) -> list[dict]:
    return run["prom"].query_range(expr, run["start"], run["end"] + 5, 1)


def test_the_monitors_find_the_operator_and_both_pods_of_each_training_stage(scraped):
    prom = scraped["prom"]
    series = prom.api("series", **{"match[]": f'stepshot_trainer_step{{namespace="{NS}"}}', "start": scraped["start"],
                                   "end": scraped["end"]})
    pods = {}
    for s in series:
        assert s["name"] == NAME and s["job"] == f"{RELEASE_NS}/stepshot-trainer" and s["endpoint"] == "metrics", s
        pods.setdefault(s["stage"], set()).add(s["pod"])
    # every rank pod of both training stages was scraped, and nothing else of the run
    assert set(pods) == {"oneshot", "g2"} and all(len(p) == 2 for p in pods.values()), pods
    operator = prom.api("series", **{"match[]": "stepshot_reconcile_duration_seconds_count", "start": scraped["start"],
                                     "end": scraped["end"]})
    assert {(s["service"], s["namespace"]) for s in operator} == {("stepshot-metrics", RELEASE_NS)}, operator


def test_every_dashboard_query_returns_data(scraped):
    empty = []
    for where, expr in dashboard_queries():
        if not _range(scraped, substitute(expr, scraped["end"] - scraped["start"])):   # raises on invalid PromQL
            empty.append(f"{where}: {expr}")
    assert not empty, "no data:\n" + "\n".join(empty)


def test_images_per_second_of_two_pods_equals_the_logged_all_ranks_rate(scraped):
    """Each pod exports its own ranks' images/s; the dashboard sums the pods. Every rate the
    trainer's periodic line logged (the whole process group's) is, in order, a value the panel
    showed within 10%: summed once, not once per pod."""
    panel = next(e for w, e in dashboard_queries() if w.startswith("panel 'Images/s"))
    logged = logged_rates(scraped["log"])
    assert "oneshot" in logged, scraped["log"][-3000:]
    for stage, rates in logged.items():
        expr = substitute(panel, 0).replace('stage=~".*"', f'stage="{stage}"').replace('namespace=~".*"',
                                                                                     f'namespace="{NS}"')
        [series] = _range(scraped, expr)
        pairs = matched_in_order(rates, series["values"])
        for rate, shown in pairs:
            print(f"{stage}: log {rate:.1f} img/s, dashboard {shown:.1f} img/s (2 pods)")
        assert len(pairs) >= max(1, (len(rates) + 1) // 2), (stage, rates, series["values"])


def test_progress_moves_during_each_stage_and_reaches_100_percent(scraped):
    panel = next(e for w, e in dashboard_queries() if w.startswith("panel 'Stage progress"))
    series = {s["metric"]["stage"]: [float(v) for _, v in s["values"]]
              for s in _range(scraped, substitute(panel, 0).replace('namespace=~".*"', f'namespace="{NS}"'))}
    assert set(series) == {"oneshot", "g2"}
    for stage, values in series.items():
        assert values == sorted(values) and len(set(values)) >= 3 and values[-1] == 1.0, (stage, values)


def test_no_alert_on_the_healthy_run_and_the_failed_run_alerts(scraped):
    prom = scraped["prom"]
    assert all(r["health"] == "ok" for r in prom.rules()), prom.rules()
    alerts = {(s["metric"]["alertname"], s["metric"].get("name"))
              for s in _range(scraped, f'ALERTS{{namespace=~"{NS}|{NS_FAILING}|{RELEASE_NS}"}}')}
    assert alerts == {("StepshotRunFailed", FAILING)}, alerts
    [tau] = prom.query(f'stepshot_kendall_tau{{namespace="{NS}", name="{NAME}"}}')
    assert float(tau["value"][1]) == pytest.approx(scraped["status"]["result"]["kendallTau"], abs=5e-5)
