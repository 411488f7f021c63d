{{/* Full name: the release name, or release-chart when they differ. */}}
{{- define "replicant.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "replicant.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "replicant.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "replicant.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "replicant.labels" -}}
{{ include "replicant.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Whether a monitoring part is on: its own `enabled` when set, else monitoring.enabled. */}}
{{- define "replicant.monitoring" -}}
{{- $part := index .root.Values.monitoring .part -}}
{{- if kindIs "bool" $part.enabled -}}
{{- if $part.enabled }}true{{ end -}}
{{- else if .root.Values.monitoring.enabled -}}
{{- if eq .part "podMonitor" -}}
{{- if not .root.Values.metrics.service.enabled }}true{{ end -}}
{{- else if eq .part "serviceMonitor" -}}
{{- if .root.Values.metrics.service.enabled }}true{{ end -}}
{{- else -}}
true
{{- end -}}
{{- end -}}
{{- end -}}
