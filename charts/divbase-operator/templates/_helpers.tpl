{{/* Names and labels shared by every template. */}}

{{- define "divbase-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "divbase-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "divbase-operator.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "divbase-operator.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "divbase-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "divbase-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "divbase-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "divbase-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: divbase
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "divbase-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "divbase-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "divbase-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The namespaced rules: exactly the API calls the operator makes (see operator/divbase_operator/kube.py and
handlers.py). No Secrets (migration Jobs read the database Secret themselves), no pods/exec; pods/log get only
for the lock-wait line of a running migration pod's log tail (docs/runner-contract.md).
*/}}
{{- define "divbase-operator.namespacedRules" -}}
# The custom resource: watched through a Kopf index; patched only for the operator's finalizer.
- apiGroups: ["divbase.io"]
  resources: ["divbasedatabases"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written with a resourceVersion precondition.
- apiGroups: ["divbase.io"]
  resources: ["divbasedatabases/status"]
  verbs: ["get", "patch"]
# Migration Jobs: created with deterministic names; the finalizer deletes those the resource controls, by name and
# uid (never as a collection by label).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Workloads: server-side apply (patch, which creates on first apply), deleted by name when a workload is removed
# or the resource deleted (only those it controls: never as a collection by label).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Pods of Jobs and workloads: read for termination messages and "no pod of the old release left".
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
{{- if .Values.rbac.readMigrationLogs }}
# The tail of a running migration pod's log (at most 10 lines, 32 KiB, every 5 s while it runs): only the runner
# contract's lock-wait line is taken from it (who holds the migration lock, since when), nothing else is kept.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{- end }}
# The workloads' ReplicaSets: a workload pod counts only when its ReplicaSet's controller is the resource's
# Deployment (watched by label; one not yet seen is read by name).
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get", "list", "watch"]
# The SQL of a Manual contract, published for review (server-side apply; garbage-collected with the resource),
# watched (by label) so that a change by anyone else is undone at once.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Kubernetes Events about each step (Kopf posts core/v1 Events; events.k8s.io for newer clients).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
