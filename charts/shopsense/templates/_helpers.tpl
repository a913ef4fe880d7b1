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

{{/* The registries allow-list as the operator reads it (credentials_dir per Secret). */}}
{{- define "shopsense.registries" -}}
{{- $out := list -}}
{{- range .Values.registries -}}
{{- $e := dict "name" .name "url" .url -}}
{{- if .secretName -}}{{- $_ := set $e "credentials_dir" (printf "/etc/shopsense/registries/%s" .name) -}}{{- end -}}
{{- $out = append $out $e -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "shopsense.gateway.namespace" -}}
{{- default .Release.Namespace .Values.gateway.namespace -}}
{{- end -}}

{{/* Cross-field rules the schema cannot express. */}}
{{- define "shopsense.validateConfig" -}}
{{- if and .Values.defaultModel.enabled .Values.defaultModel.ingress.enabled (not .Values.defaultModel.ingress.host) -}}
{{- fail "defaultModel.ingress.enabled needs defaultModel.ingress.host" -}}
{{- end -}}
{{- $urls := list -}}
{{- range .Values.registries }}{{ $urls = append $urls .url }}{{ end -}}
{{- if not .Values.registries -}}
{{- fail "registries: name at least one MLflow registry the operator may use" -}}
{{- end -}}
{{- if and .Values.defaultModel.enabled (not (has .Values.settings.mlflowUrl $urls)) -}}
{{- fail "settings.mlflowUrl (the default model's registry) must be one of registries[].url" -}}
{{- end -}}
{{- if and .Values.monitoring.podMonitor.enabled (not .Values.settings.prometheusUrl) -}}
{{- fail "monitoring.podMonitor.enabled feeds the rollout gate: set settings.prometheusUrl too" -}}
{{- end -}}
{{- end -}}

{{/* The operator's RBAC rules on the namespaced kinds (ClusterRole or a Role per watched namespace). */}}
{{- define "shopsense.operator.rules" -}}
- apiGroups: ["shopsense.io"]
  resources: ["sentimentmodels"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["shopsense.io"]
  resources: ["sentimentmodels/status"]
  verbs: ["get", "patch"]
- apiGroups: ["shopsense.io"]
  resources: ["sentimentmodels/finalizers"]
  verbs: ["update"]
- apiGroups: ["ray.io"]
  resources: ["rayservices"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses", "networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
