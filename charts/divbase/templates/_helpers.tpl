{{- define "divbase.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The DivBaseDatabase's name; its Deployments are <name>-api and <name>-worker, so keep it short. */}}
{{- define "divbase.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "divbase.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "divbase.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "divbase.version" -}}
{{- default .Chart.AppVersion .Values.version -}}
{{- end -}}

{{- define "divbase.secretName" -}}
{{- default (printf "%s-db" (include "divbase.fullname" .)) .Values.database.secretName -}}
{{- end -}}

{{- define "divbase.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "divbase.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: divbase
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Pod and container hardening shared by the API and the worker (UID and GID: .Values.securityContext). */}}
{{- define "divbase.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
{{- if hasKey .Values.securityContext "runAsGroup" }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container's: root's `dict "readOnly" <the workload's readOnlyRootFilesystem>`. */}}
{{- define "divbase.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .readOnly }}
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "divbase.env" -}}
- name: DIVBASE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "divbase.secretName" . }}
      key: {{ .Values.database.secretKey }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
