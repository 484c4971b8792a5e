{{/* Chart name. */}}
{{- define "stepshot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object-name prefix: <release>-<chart>, or <release> when it contains the chart name. */}}
{{- define "stepshot.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "stepshot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stepshot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stepshot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "stepshot.labels" -}}
helm.sh/chart: {{ include "stepshot.chart" . }}
app.kubernetes.io/name: {{ include "stepshot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stepshot
{{- end }}

{{- define "stepshot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stepshot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "stepshot.trainerServiceAccountName" -}}
{{- default (printf "%s-trainer" (include "stepshot.fullname" .)) .Values.trainer.serviceAccount.name }}
{{- end }}

{{- define "stepshot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Validates rbac.mode and watchNamespaces; renders nothing. */}}
{{- define "stepshot.validate" -}}
{{- if not (has .Values.rbac.mode (list "namespaced" "cluster")) }}
{{- fail (printf "rbac.mode must be \"namespaced\" or \"cluster\", got %q" .Values.rbac.mode) }}
{{- end }}
{{- if eq .Values.rbac.mode "namespaced" }}
{{- range .Values.watchNamespaces }}
{{- if regexMatch "[^a-z0-9-]" . }}
{{- fail (printf "watchNamespaces: %q is not a namespace name; patterns need rbac.mode=cluster" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Namespaces the operator watches, as a JSON list: namespaced mode defaults to the release
namespace; cluster mode defaults to [] (= all namespaces).
*/}}
{{- define "stepshot.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- toJson (uniq .Values.watchNamespaces) }}
{{- else if eq .Values.rbac.mode "namespaced" }}
{{- toJson (list .Release.Namespace) }}
{{- else }}
{{- toJson (list) }}
{{- end }}
{{- end }}

{{/* Namespaces that get the trainer ServiceAccount, as a JSON list. */}}
{{- define "stepshot.trainerNamespaces" -}}
{{- $out := list }}
{{- range (include "stepshot.watchNamespaces" . | fromJsonArray) }}
{{- if not (regexMatch "[^a-z0-9-]" .) }}
{{- $out = append $out . }}
{{- end }}
{{- end }}
{{- if not $out }}
{{- $out = append $out .Release.Namespace }}
{{- end }}
{{- $out = concat $out .Values.trainer.serviceAccount.extraNamespaces }}
{{- toJson (uniq $out) }}
{{- end }}

{{/*
The operator's namespaced rules, shared by the Role (namespaced mode) and the ClusterRole
(cluster mode): exactly the calls of operator/stepshot_operator (k8s.py, handlers.py) and of
kopf's watches, nothing else. tests/chart/test_chart.py runs the operator with only these.
*/}}
{{- define "stepshot.namespacedRules" -}}
# SupernetTrainings: kopf lists/watches them; reconcile reads one (get) and deletes it once
# ttlSecondsAfterFinished has passed.
- apiGroups: ["stepshot.dev"]
  resources: ["supernettrainings"]
  verbs: ["get", "list", "watch", "delete"]
# The status is recomputed and merge-patched on every reconcile pass.
- apiGroups: ["stepshot.dev"]
  resources: ["supernettrainings/status"]
  verbs: ["patch"]
# Stage Jobs: created, listed per resource, watched by kopf (job events wake the owner),
# patched for spec.suspend. Deleting the resource deletes them through owner references.
- apiGroups: ["batch"]
  resources: ["jobs"]
  # delete: the surviving per-node Jobs of a failed multi-node stage (clusters before 1.22).
  verbs: ["create", "list", "watch", "patch", "delete"]
# Pods: listed read-only (while a stage Job is active or a result is unread): the termination
# messages of finished stage pods, and why a pod cannot start (the PodsPending condition).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# The rendered-spec ConfigMap (read back after the resource's spec was edited, to keep acting
# on the spec the pods read) and the headless rendezvous Service of multi-node stages; both read
# when a create finds one already (ChildNameTaken unless this resource controls it).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "get"]
- apiGroups: [""]
  resources: ["services"]
  # get: a Service that already exists must be this resource's (not another's of the same name).
  verbs: ["create", "get"]
# The trainer ServiceAccount (no role, no token) in namespaces the chart did not create it in.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create"]
# Events on the resource (stage transitions, refused children), posted through the API client.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.rbac.volumeSnapshots }}
# Weight snapshots between steps (spec.storage.snapshot: volumeSnapshot|auto).
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshots"]
  verbs: ["create", "list"]
{{- end }}
{{- end }}
