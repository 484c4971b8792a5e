"""The Grafana dashboard queries only what the operator and the trainer really export.

Every PromQL expression of the dashboard (panel targets and template variables) is parsed
down to its metric selectors; each selected sample name must be one the operator's or the
trainer's prometheus-client registry exposes (a Counter `x` exposes `x_total`, a Histogram
`x` exposes `x_bucket`/`x_sum`/`x_count`, ...), rate()/increase() may only see counters
and histogram series, histogram_quantile() only `_bucket` series, and every label the
dashboard filters or groups on must exist on that series. Conversely the dashboard must
cover the topics of the issue (resources by phase, stages, partitions, ...).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "stepshot.json"
CHART_DASHBOARD = ROOT / "charts" / "stepshot" / "dashboards" / "stepshot.json"

# Labels Prometheus adds to scraped series. Operator: ServiceMonitor with honorLabels
# (its own `namespace`/`name` labels win, so those are NOT target labels here).
# Trainer: PodMonitor; `namespace` from the pod, `name` from the pod label
# stepshot.dev/training (relabeling in charts/stepshot/templates/podmonitor.yaml).
OPERATOR_TARGET_LABELS = {"instance", "job", "pod", "container", "service", "endpoint"}
TRAINER_TARGET_LABELS = {"instance", "job", "pod", "container", "endpoint", "namespace", "name"}

# PromQL functions and aggregation operators (Prometheus 2.x/3.x) plus Grafana's
# template-variable query functions.
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
    "log10", "log2", "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round",
    "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc",
    "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time",
    "timestamp", "vector", "year",
    # aggregations
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio",
    # Grafana variable queries
    "label_values", "label_names", "metrics", "query_result",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "atan2", "inf", "nan"}


@dataclass
class Series:
    """One exposed sample name and what is known about it."""
    name: str
    family: str
    type: str              # counter | gauge | histogram | summary | ...
    labels: set[str]
    source: str            # "operator" | "trainer"
    rate_ok: bool = False  # counter samples and histogram/summary _bucket/_sum/_count


@dataclass
class Selector:
    metric: str
    labels: set[str] = field(default_factory=set)


# ---------------------------------------------------------------------------------------
# What the registries export
def _families(registry) -> list[tuple[str, str, set[str]]]:
    """(family name, type, label names) of every collector in a CollectorRegistry."""
    out = []
    collectors = list(getattr(registry, "_collector_to_names", {}).keys())
    for collector in collectors:
        # label names of a labelled metric without children yet (no samples to read them from)
        labelnames = set(getattr(collector, "_labelnames", ()) or ())
        for family in collector.collect():
            labels = set(labelnames)
            for sample in family.samples:
                labels |= set(sample.labels)
            labels.discard("le")
            labels.discard("quantile")
            out.append((family.name, family.type, labels))
    return out


def _series(families, source: str, target_labels: set[str]) -> dict[str, Series]:
    """Sample names exposed per prometheus-client's naming rules."""
    out: dict[str, Series] = {}
    for name, mtype, labels in families:
        labels = labels | target_labels
        if mtype == "counter":
            names = {f"{name}_total": True, f"{name}_created": False}
        elif mtype in ("histogram", "gaugehistogram"):
            suffixes = ("_bucket", "_sum", "_count", "_created") if mtype == "histogram" else \
                ("_bucket", "_gsum", "_gcount")
            names = {name + s: s != "_created" and mtype == "histogram" for s in suffixes}
        elif mtype == "summary":
            names = {name: False, f"{name}_sum": True, f"{name}_count": True, f"{name}_created": False}
        elif mtype == "info":
            names = {f"{name}_info": False}
        else:  # gauge, stateset, unknown
            names = {name: False}
        for sample, rate_ok in names.items():
            sample_labels = labels | ({"le"} if sample.endswith("_bucket") else set())
            out[sample] = Series(sample, name, mtype, sample_labels, source, rate_ok)
    return out


def _find_registry(module):
    """A module's CollectorRegistry: a module-level one, or one a metrics class owns."""
    from prometheus_client import CollectorRegistry

    for attr in ("REGISTRY", "registry"):
        reg = getattr(module, attr, None)
        if isinstance(reg, CollectorRegistry):
            return reg
    for attr in ("make_registry", "create_registry", "new_registry"):
        fn = getattr(module, attr, None)
        if callable(fn):
            reg = fn()
            if isinstance(reg, CollectorRegistry):
                return reg
    return None


def trainer_series() -> dict[str, Series]:
    from stepshot_trainer import metrics as tm

    registry = tm.TrainerMetrics(stage="oneshot", partition="root", port=None).registry
    series = _series(_families(registry), "trainer", TRAINER_TARGET_LABELS)
    # the module's own list of names must be what the registry holds
    assert _family_names(series) == sorted(tm.metric_names())
    return series


def _family_names(series: dict[str, Series]) -> list[str]:
    """Family names as the metric_names() functions list them (counters with `_total`)."""
    return sorted({s.family + ("_total" if s.type == "counter" else "") for s in series.values()})


def operator_series() -> dict[str, Series]:
    from stepshot_operator import metrics as om

    registry = _find_registry(om)
    if registry is None:
        ops = getattr(om, "OperatorMetrics", None) or getattr(om, "Metrics", None)
        assert ops is not None, "stepshot_operator.metrics exposes no registry"
        registry = ops().registry
    series = _series(_families(registry), "operator", OPERATOR_TARGET_LABELS)
    names = getattr(om, "metric_names", None)
    if callable(names):
        assert _family_names(series) == sorted(names())
    return series


@pytest.fixture(scope="module")
def exported() -> dict[str, Series]:
    op, tr = operator_series(), trainer_series()
    clash = set(op) & set(tr)
    assert not clash, f"operator and trainer export the same names: {clash}"
    return {**op, **tr}


# ---------------------------------------------------------------------------------------
# PromQL parsing
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)")


def parse_promql(expr: str) -> tuple[list[Selector], list[str], dict[str, list[str]]]:
    """Return (selectors, called functions, {function: [metric names directly inside]})."""
    text = _GRAFANA_VAR.sub("0", expr.strip())
    # Grafana's label_values(selector, label): the label must exist on the selector's metric
    variable_label = None
    m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)", text, re.S)
    if m:
        text, variable_label = m.group(1), m.group(2)
    # label matchers: keep the label names of each selector, drop the values
    strings_out = _STRING.sub('""', text)
    selectors: list[Selector] = []
    matchers: dict[int, set[str]] = {}
    for m in re.finditer(r"\{([^{}]*)\}", strings_out):
        names = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", m.group(1)))
        matchers[m.start()] = names
    # grouping clauses: by (...), without (...), on (...), ignoring (...), group_x (...)
    grouping: list[tuple[int, set[str]]] = []
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)",
                         strings_out):
        grouping.append((m.start(), {x.strip() for x in m.group(2).split(",") if x.strip()}))
    flat = re.sub(r"\{[^{}]*\}", lambda m: " " * len(m.group(0)), strings_out)
    flat = re.sub(r"\[[^\[\]]*\]", lambda m: " " * len(m.group(0)), flat)
    flat = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)",
                  lambda m: " " * len(m.group(0)), flat)
    functions: list[str] = []
    inside: dict[str, list[str]] = {}
    for m in _IDENT.finditer(flat):
        word = m.group(1)
        after = flat[m.end():].lstrip()
        if after.startswith("("):
            functions.append(word)
            inner = _IDENT.match(after[1:].lstrip())
            if inner and not after[1:].lstrip()[len(inner.group(1)):].lstrip().startswith("("):
                inside.setdefault(word, []).append(inner.group(1))
            continue
        if word.lower() in KEYWORDS:
            continue
        sel = Selector(word)
        # the matcher block right after this identifier (positions are preserved)
        rest = strings_out[m.end():]
        if rest.lstrip().startswith("{"):
            sel.labels |= matchers.get(m.end() + len(rest) - len(rest.lstrip()), set())
        selectors.append(sel)
    # bare matcher blocks without a metric name (`{__name__=...}`) are not allowed here
    for start in matchers:
        before = strings_out[:start].rstrip()
        assert before and (before[-1].isalnum() or before[-1] in "_:"), \
            f"selector without a metric name in {expr!r}"
    # grouping labels apply to every selector of the expression (conservative check)
    for _, labels in grouping:
        for sel in selectors:
            sel.labels |= labels
    if variable_label:
        functions.insert(0, "label_values")
        for sel in selectors:
            sel.labels.add(variable_label)
    return selectors, functions, inside


def test_parser_on_known_shapes():
    sels, funcs, inside = parse_promql(
        'histogram_quantile(0.95, sum by (le, kind) (rate(x_bucket{a="b{c}", d=~"$v"}[$__rate_interval])))'
        ' / on (kind) group_left clamp_min(y_total offset 5m, 1) and z')
    assert [s.metric for s in sels] == ["x_bucket", "y_total", "z"]
    assert sels[0].labels >= {"a", "d", "le", "kind"}
    assert funcs == ["histogram_quantile", "sum", "rate", "clamp_min"]
    assert inside == {"rate": ["x_bucket"], "clamp_min": ["y_total"]}
    sels, funcs, _ = parse_promql('label_values(m{namespace=~"$namespace"}, name)')
    assert [s.metric for s in sels] == ["m"] and sels[0].labels == {"namespace", "name"}
    assert funcs == ["label_values"]


# ---------------------------------------------------------------------------------------
# The dashboard
def _load() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def _queries(dash: dict) -> list[tuple[str, str]]:
    """(where, expr) of every PromQL expression: panel targets and template variables."""
    out = []
    for p in _panels(dash):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel {p['title']!r} {t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            out.append((f"variable {v['name']!r}", q))
    return out


def test_chart_embeds_the_same_dashboard():
    # one definition: the chart's file (Helm reads only files inside the chart); the
    # repository-root path is a link to it
    assert DASHBOARD.is_symlink() and DASHBOARD.resolve() == CHART_DASHBOARD.resolve()
    assert CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes()


def test_dashboard_shape():
    dash = _load()
    assert dash["uid"] == "stepshot"
    assert 36 <= dash["schemaVersion"] <= 41
    names = {v["name"]: v for v in dash["templating"]["list"]}
    assert names["datasource"]["type"] == "datasource"
    assert names["datasource"]["query"] == "prometheus"
    assert {"namespace", "name"} <= set(names)
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in _panels(dash):
        if p["type"] == "row":
            continue
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        # every panel queries the data source picked in the variable (sidecar-friendly: no
        # ${DS_...} import inputs that a provisioned dashboard cannot resolve)
        for obj in [p] + p["targets"]:
            assert obj["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
    # per-resource panels honour the namespace/name variables
    for where, expr in _queries(dash):
        for metric in re.findall(r"(stepshot_(?:resource_\w+|kendall_tau|trainer_\w+))\{([^}]*)\}", expr):
            assert "$namespace" in metric[1] and "$name" in metric[1], (where, expr)


def test_every_query_uses_only_exported_metrics(exported):
    problems = []
    queries = _queries(_load())
    assert len(queries) >= 15
    used_families = set()
    for where, expr in queries:
        selectors, functions, inside = parse_promql(expr)
        assert selectors, f"{where}: no metric in {expr!r}"
        for fn in functions:
            if fn not in FUNCTIONS:
                problems.append(f"{where}: unknown function {fn}() in {expr!r}")
        for sel in selectors:
            series = exported.get(sel.metric)
            if series is None:
                problems.append(f"{where}: {sel.metric} is exported by neither the operator nor "
                                f"the trainer ({expr!r})")
                continue
            used_families.add(series.family)
            unknown = sel.labels - series.labels
            if unknown:
                problems.append(f"{where}: {sel.metric} has no label(s) {sorted(unknown)} "
                                f"(it has {sorted(series.labels)})")
        for fn in ("rate", "irate", "increase", "resets"):
            for metric in inside.get(fn, []):
                s = exported.get(metric)
                if s is not None and not s.rate_ok:
                    problems.append(f"{where}: {fn}() over {metric}, a {s.type} sample")
        if "histogram_quantile" in functions:
            for sel in selectors:
                if not (sel.metric.endswith("_bucket") and getattr(exported.get(sel.metric), "type", None) == "histogram"):
                    problems.append(f"{where}: histogram_quantile over {sel.metric}, "
                                    "not a histogram's _bucket series")
    assert not problems, "\n".join(problems)
    # and the dashboard shows every exported metric (except the trivial _created samples)
    families = {s.family for s in exported.values()}
    assert families - used_families == set(), f"exported but not on the dashboard: {families - used_families}"


REQUIRED_TOPICS = {
    # topic: (title regex, metric that must be queried in that panel)
    "resources by phase": (r"phase", "stepshot_resources"),
    "current stage per resource": (r"stage", "stepshot_resource_step_index"),
    "stages done/planned": (r"stages", "stepshot_resource_stages_done"),
    "stages planned": (r"stages", "stepshot_resource_stages"),
    "runs: phase": (r"^runs", "stepshot_resource_phase"),
    "runs: stage": (r"^runs", "stepshot_resource_current_stage"),
    "runs: stuck (last step)": (r"^runs", "stepshot_trainer_last_step_timestamp_seconds"),
    "runs: last stage change": (r"^runs", "stepshot_resource_last_progress_timestamp_seconds"),
    "runs: tau": (r"^runs", "stepshot_kendall_tau"),
    "failed runs": (r"failed", "stepshot_resource_phase"),
    "stage durations": (r"duration", "stepshot_stage_duration_seconds_bucket"),
    "stage transitions": (r"transition", "stepshot_stage_transitions_total"),
    "child jobs": (r"job", "stepshot_child_jobs"),
    "reconcile errors": (r"reconcile", "stepshot_reconcile_errors_total"),
    "reconcile latency": (r"reconcile", "stepshot_reconcile_duration_seconds_bucket"),
    "training loss per member": (r"loss", "stepshot_trainer_loss"),
    "images/s per stage/partition": (r"images", "stepshot_trainer_images_per_second"),
    "learning rate": (r"learning rate", "stepshot_trainer_learning_rate"),
    "kendall tau over time (final)": (r"tau", "stepshot_kendall_tau"),
    "kendall tau over time (selection)": (r"tau", "stepshot_trainer_selection_kendall_tau"),
    "stage progress (steps done of planned)": (r"progress", "stepshot_trainer_planned_steps"),
    "stage ETA": (r"ETA", "stepshot_trainer_steps_per_second"),
    "data-loader wait": (r"data-loader", "stepshot_trainer_data_wait_seconds"),
    "evaluation progress": (r"evaluation progress", "stepshot_trainer_evaluation_subnets_done"),
    "snapshot progress": (r"snapshot progress", "stepshot_trainer_snapshot_written_bytes"),
}


@pytest.mark.parametrize("topic", sorted(REQUIRED_TOPICS))
def test_dashboard_covers_topic(topic):
    title_re, metric = REQUIRED_TOPICS[topic]
    hits = [p["title"] for p in _panels(_load()) if p["type"] != "row"
            and re.search(title_re, p["title"], re.I)
            and any(metric in (s.metric for s in parse_promql(t["expr"])[0]) for t in p["targets"])]
    assert hits, f"no panel titled like /{title_re}/ queries {metric}"


def test_per_member_and_per_stage_breakdowns():
    panels = {p["title"]: p for p in _panels(_load())}
    loss = panels["Training loss per member"]["targets"][0]["legendFormat"]
    assert "{{member}}" in loss and "{{stage}}" in loss and "{{partition}}" in loss
    ips = panels["Images/s per stage / partition"]["targets"][0]
    assert "{{stage}}" in ips["legendFormat"] and "{{partition}}" in ips["legendFormat"]
    tau = [t["expr"] for t in panels["Kendall tau over time"]["targets"]]
    assert any("stepshot_kendall_tau" in e for e in tau)
    assert any("stepshot_trainer_selection_kendall_tau" in e for e in tau)
    assert panels["Kendall tau over time"]["type"] == "timeseries"


def test_trainer_exposition_passes_promtool():
    from prometheus_client import generate_latest
    from promtool import promtool_lint
    from stepshot_trainer import metrics as tm

    m = tm.TrainerMetrics(stage="oneshot", partition="root", port=None)
    for name in tm.metric_names():
        if name != tm.LOSS:
            m.set(name, 1.0)
    m.loss("max", 0.5)
    assert promtool_lint(generate_latest(m.registry)) == ""


# Every pod of a multi-node stage serves the trainer metrics (stepshot_trainer.metrics): the
# per-pod rate is summed over pods, the figures every pod shares are never summed.
PER_POD_RATES = {"stepshot_trainer_images_per_second"}


def test_pod_aggregation_counts_each_image_once():
    problems = []
    for where, expr in _queries(_load()):
        if where.startswith("variable"):
            continue
        for agg, metric in re.findall(r"\b(sum|max|min|avg)\s+by\s*\([^()]*\)\s*\((stepshot_trainer_\w+)", expr):
            if (metric in PER_POD_RATES) != (agg == "sum"):
                problems.append(f"{where}: {agg} over {metric}")
        for metric in re.findall(r"(stepshot_trainer_\w+)\{", expr):
            if not re.search(rf"\b(sum|max|min|avg)\s+by\s*\([^()]*\)\s*\({metric}\{{", expr):
                problems.append(f"{where}: {metric} is not aggregated over the stage's pods")
    assert not problems, "\n".join(problems)


def test_stage_durations_do_not_depend_on_the_dashboard_range():
    panel = next(p for p in _panels(_load()) if p["title"].startswith("Stage duration"))
    for t in panel["targets"]:
        assert "$__range" not in t["expr"] and "increase(" not in t["expr"], t["expr"]
