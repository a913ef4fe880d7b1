{{/* Standard helpers (KubeRay / bitnami style). */}}
{{- define "shopsense.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shopsense.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shopsense.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: name and instance only (selectors are immutable). */}}
{{- define "shopsense.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shopsense.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shopsense.labels" -}}
helm.sh/chart: {{ include "shopsense.chart" . }}
{{ include "shopsense.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: shopsense
{{- end -}}

{{- define "shopsense.operator.name" -}}
{{- printf "%s-operator" (include "shopsense.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shopsense.serviceAccount.name" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shopsense.operator.name" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secret names handed to the Ray pods (references only). */}}
{{- define "shopsense.secretNames" -}}
{{- $names := list -}}
{{- range $key := list "minio" "mlflow" "opensearch" -}}
{{- $s := index $.Values.secrets $key -}}
{{- if and $s $s.name -}}{{- $names = append $names $s.name -}}{{- end -}}
{{- end -}}
{{- toJson $names -}}
{{- end -}}

{{/* Cross-field rules the schema cannot express. */}}
{{- define "shopsense.validateConfig" -}}
{{- if and .Values.defaultModel.enabled .Values.defaultModel.ingress.enabled (not .Values.defaultModel.ingress.host) -}}
{{- fail "defaultModel.ingress.enabled needs defaultModel.ingress.host" -}}
{{- end -}}
{{- if and .Values.monitoring.podMonitor.enabled (not .Values.settings.prometheusUrl) -}}
{{- fail "monitoring.podMonitor.enabled feeds the rollout gate: set settings.prometheusUrl too" -}}
{{- end -}}
{{- end -}}
