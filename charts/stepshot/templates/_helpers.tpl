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
(cluster mode). Exactly what the operator and kopf use; nothing else.
*/}}
{{- define "stepshot.namespacedRules" -}}
# The SupernetTraining resources: watched by kopf, annotated/finalized (kopf progress storage).
- apiGroups: ["stepshot.dev"]
  resources: ["supernettrainings"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["stepshot.dev"]
  resources: ["supernettrainings/status"]
  verbs: ["get", "patch", "update"]
# Stage Jobs (one-shot, snapshot, partitions, evaluation): created, followed, suspended, removed.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
# Pods: read-only, for the termination messages of failed stage pods.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Rendered spec ConfigMaps and headless rendezvous Services of multi-node stages.
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["create", "get", "list", "watch", "delete"]
# Events on the resource (kopf's handler events and the operator's own).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.volumeSnapshots }}
# Weight snapshots between steps (spec.storage.snapshot: volumeSnapshot|auto).
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshots"]
  verbs: ["create", "get", "list", "watch"]
{{- end }}
{{- end }}
