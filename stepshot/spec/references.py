"""Strings of the spec that name other objects, each checked against the rules of the kind it
names: one table (`REFERENCES`, field -> rule) read by the cross-field rules.

A claim name with an upper-case letter or an image reference with a trailing space passes
a plain `type: string`; the API server takes the resource, and the Job or its pods are then
refused or wait (InvalidImageName, a claim that can never bind) while the resource says
Running. Here each such field is held to the grammar the API server (or the kubelet) applies
to the object it names, and refused with the field's path before anything is created.

Fields are matched by their path's tail, with `[]` for list items, `*` for a map's values and
`<key>` for a map's keys, so one row covers a field wherever it appears (every scheduling
role, every affinity term). tests/core/test_references.py walks the schema: every string
field is either in the table or listed there as naming nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

from stepshot.spec.openapi import invalid


@dataclass(frozen=True)
class NameRule:
    what: str             # the grammar, in the words of the message
    pattern: str
    max_length: int
    prefix_max: int = 0   # qualified names: the DNS prefix before '/' (0: no prefix allowed)

    def why(self, value: str) -> str | None:
        if value != value.strip():
            return "must not have leading or trailing whitespace"
        prefix, slash, name = value.rpartition("/") if self.prefix_max else ("", "", value)
        if not re.fullmatch(self.pattern, value) or len(name) > self.max_length or len(prefix) > self.prefix_max:
            return f"must be {self.what}"
        return None


_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
DNS_SUBDOMAIN = NameRule("a DNS-1123 subdomain (at most 253 lower-case alphanumerics, '-' or '.', starting and "
                         "ending with an alphanumeric)", _SUBDOMAIN, 253)
DNS_LABEL = NameRule("a DNS-1123 label (at most 63 lower-case alphanumerics or '-', starting and ending with an "
                     "alphanumeric)", r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", 63)
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
LABEL_KEY = NameRule("a qualified name ([prefix/]name, name at most 63 characters of alphanumerics, '-', '_', "
                     "'.', prefix a DNS subdomain)", rf"({_SUBDOMAIN}/)?{_NAME}", 63, prefix_max=253)
LABEL_VALUE = NameRule("a label value (at most 63 characters of alphanumerics, '-', '_', '.', starting and "
                       "ending with an alphanumeric, or empty)", rf"({_NAME})?", 63)
CSI_DRIVER = NameRule("a CSI driver name (at most 63 alphanumerics, '-', '.', starting and ending with an "
                      "alphanumeric)", r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?", 63)
HOST = NameRule("a host name or IP address (at most 253 alphanumerics, '-', '.', or an IPv6 address's hex "
                "digits and ':')", r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]+\]?", 253)
DATA_KEY = NameRule("a ConfigMap or Secret key (at most 253 alphanumerics, '-', '_', '.')", r"[-._a-zA-Z0-9]+", 253)
NODE_FIELD = NameRule("metadata.name (the only node field a selector may match)", r"metadata\.name", 13)

# The reference grammar of container images (github.com/distribution/reference): an optional
# registry (host[:port]), lower-case path components, then :tag and/or @digest.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
_REFERENCE = (rf"(?:(?:{_DOMAIN}|\[[a-fA-F0-9:]+\])(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
              r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")
IMAGE = NameRule("a container image reference ([registry[:port]/]lower-case/path[:tag][@digest])",
                 _REFERENCE, 4096)


@dataclass(frozen=True)
class Reference:
    kind: str        # what the field names, for the message
    rule: NameRule
    optional: bool = True   # "" means unset (the API server's default applies); a map key is never optional


# Field (path tail) -> the kind it names and that kind's rule. Longer tails win.
REFERENCES: dict[str, Reference] = {
    "spec.image": Reference("container image", IMAGE, optional=False),
    "spec.storage.claimName": Reference("PersistentVolumeClaim", DNS_SUBDOMAIN),
    "spec.storage.volumeSnapshotClassName": Reference("VolumeSnapshotClass", DNS_SUBDOMAIN),
    # spec.dataset.volume: a core/v1 volume source (free-form in the schema; one source, checked
    # by the operator's allow-list): the objects its sources name.
    "volume.persistentVolumeClaim.claimName": Reference("PersistentVolumeClaim", DNS_SUBDOMAIN),
    "volume.configMap.name": Reference("ConfigMap", DNS_SUBDOMAIN),
    "volume.secret.secretName": Reference("Secret", DNS_SUBDOMAIN),
    "volume.csi.driver": Reference("CSIDriver", CSI_DRIVER, optional=False),
    "volume.nfs.server": Reference("NFS server", HOST, optional=False),
    "volume.csi.nodePublishSecretRef.name": Reference("Secret", DNS_SUBDOMAIN),
    "volume.ephemeral.volumeClaimTemplate.spec.storageClassName": Reference("StorageClass", DNS_SUBDOMAIN),
    "volume.ephemeral.volumeClaimTemplate.spec.volumeName": Reference("PersistentVolume", DNS_SUBDOMAIN),
    "volume.configMap.items[].key": Reference("ConfigMap key", DATA_KEY, optional=False),
    "volume.secret.items[].key": Reference("Secret key", DATA_KEY, optional=False),
    # spec.scheduling and each role's section
    "priorityClassName": Reference("PriorityClass", DNS_SUBDOMAIN),
    "schedulerName": Reference("scheduler", DNS_SUBDOMAIN),
    "serviceAccountName": Reference("ServiceAccount", DNS_SUBDOMAIN),
    "runtimeClassName": Reference("RuntimeClass", DNS_SUBDOMAIN),
    "imagePullSecrets[].name": Reference("Secret", DNS_SUBDOMAIN),
    "nodeSelector.<key>": Reference("node label key", LABEL_KEY),
    "nodeSelector.*": Reference("node label value", LABEL_VALUE),
    "labels.<key>": Reference("label key", LABEL_KEY),
    "labels.*": Reference("label value", LABEL_VALUE),
    "annotations.<key>": Reference("annotation key", LABEL_KEY),
    "tolerations[].key": Reference("taint key", LABEL_KEY),
    "tolerations[].value": Reference("taint value", LABEL_VALUE),
    # affinity: node and pod selector terms, wherever they sit
    "matchExpressions[].key": Reference("label key", LABEL_KEY),
    "matchExpressions[].values[]": Reference("label value", LABEL_VALUE),
    "matchFields[].key": Reference("node field", NODE_FIELD),
    "matchFields[].values[]": Reference("Node", DNS_SUBDOMAIN),
    "matchLabels.<key>": Reference("label key", LABEL_KEY),
    "matchLabels.*": Reference("label value", LABEL_VALUE),
    "matchLabelKeys[]": Reference("label key", LABEL_KEY),
    "mismatchLabelKeys[]": Reference("label key", LABEL_KEY),
    "topologyKey": Reference("node label key", LABEL_KEY),
    "namespaces[]": Reference("Namespace", DNS_LABEL),
}


def reference_of(generic: str) -> Reference | None:
    """The table's row for a field (its generic path), the longest matching tail."""
    hits = [tail for tail in REFERENCES if generic == tail or generic.endswith("." + tail)]
    return REFERENCES[max(hits, key=len)] if hits else None


def _strings(value: Any, schema: dict | None, path: str, generic: str) -> Iterator[tuple[str, str, str]]:
    """(path, generic path, string) of every string in `value`, map keys included; `schema`
    tells a map (additionalProperties: its keys are data) from an object (None: free-form,
    every key a field name)."""
    if isinstance(value, str):
        yield path, generic, value
    elif isinstance(value, dict):
        schema = schema or {}
        is_map = isinstance(schema.get("additionalProperties"), dict)
        props = schema.get("properties") or {}
        for key, item in value.items():
            if not isinstance(key, str):
                continue
            if is_map:
                yield f"{path}.{key}", f"{generic}.<key>", key
                yield from _strings(item, schema["additionalProperties"], f"{path}.{key}", f"{generic}.*")
            else:
                yield from _strings(item, props.get(key) if schema else None, f"{path}.{key}", f"{generic}.{key}")
    elif isinstance(value, list):
        items = (schema or {}).get("items")
        for i, item in enumerate(value):
            yield from _strings(item, items, f"{path}[{i}]", f"{generic}[]")


def reference_errors(value: dict, schema: dict, path: str = "spec") -> Iterator[str]:
    """Every string of `value` (schema-valid, at `path`: the spec, or the chart's defaults for
    stage pods shaped like spec.scheduling) that names an object and breaks that kind's rule."""
    for where, generic, text in _strings(value, schema, path, path):
        ref = reference_of(generic)
        if ref is None or (text == "" and ref.optional and not generic.endswith("<key>")):
            continue   # "" in an optional field: not set (the API server's own default applies)
        why = ref.rule.why(text)
        if why:
            yield invalid(where, text, f"{why}: it names a {ref.kind}")
