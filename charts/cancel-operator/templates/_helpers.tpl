{{- define "cancel-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Each process has its own ServiceAccount, so that each holds only its own rights. */}}
{{- define "cancel-operator.controllerServiceAccountName" -}}
{{- default (printf "%s-controller" (include "cancel-operator.fullname" .)) .Values.controller.serviceAccount.name -}}
{{- end -}}

{{- define "cancel-operator.sidecarServiceAccountName" -}}
{{- default (printf "%s-sidecar" (include "cancel-operator.fullname" .)) .Values.sidecar.serviceAccount.name -}}
{{- end -}}

{{- define "cancel-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cancel-operator.labels" -}}
{{ include "cancel-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cancel-operator.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "cancel-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "cancel-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Scheduling values shared by every pod of the chart. */}}
{{- define "cancel-operator.scheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "cancel-operator.sidecarReplicas" -}}
{{- if kindIs "invalid" .Values.sidecar.replicaCount -}}
{{- .Values.replicaCount -}}
{{- else -}}
{{- .Values.sidecar.replicaCount -}}
{{- end -}}
{{- end -}}

{{/*
The MutatingAdmissionPolicy API version to render the requestedBy filler
with, or nothing: where the cluster serves it (auto), or as forced.
*/}}
{{- define "cancel-operator.mutatingPolicyVersion" -}}
{{- $fill := .Values.requestedByPolicy.fillEmpty -}}
{{- $v1 := .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy" -}}
{{- $beta := .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1beta1/MutatingAdmissionPolicy" -}}
{{- if and (eq (toString $fill) "auto") $v1 -}}
admissionregistration.k8s.io/v1
{{- else if and (eq (toString $fill) "auto") $beta -}}
admissionregistration.k8s.io/v1beta1
{{- else if eq (toString $fill) "true" -}}
{{- if $v1 }}admissionregistration.k8s.io/v1{{ else }}admissionregistration.k8s.io/v1beta1{{ end -}}
{{- end -}}
{{- end -}}

{{/*
What the controller needs where it works: run StageRuns' Jobs, stop their
pods, carry out CancelRequests, record Events. Nothing else.
*/}}
{{- define "cancel-operator.controllerRules" -}}
- apiGroups: [cancel.dev]
  resources: [stageruns, cancelrequests]
  verbs: [get, list, watch]
- apiGroups: [cancel.dev]
  resources: [stageruns/status, cancelrequests/status]
  verbs: [patch]
- apiGroups: [cancel.dev]
  resources: [cancelrequests]
  verbs: [delete]
{{- if and .Values.controller.archive.urlSecret .Values.controller.archive.keepFinished }}
# Retention: finished StageRuns leave the cluster once archived.
- apiGroups: [cancel.dev]
  resources: [stageruns]
  verbs: [delete]
{{- end }}
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/*
The namespaces the REST APIs serve, as a JSON list (empty: all): as set, or
else the controller's watched namespaces.
*/}}
{{- define "cancel-operator.sidecarNamespaces" -}}
{{- if .Values.sidecar.namespaces -}}
{{- toJson .Values.sidecar.namespaces -}}
{{- else if eq .Values.controller.watch.mode "namespaces" -}}
{{- toJson .Values.controller.watch.namespaces -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/*
TLS to the archive (controller.archive.tls), for both processes: libpq's
environment, which the database client reads under the URL's own settings.
*/}}
{{- define "cancel-operator.archiveTlsEnv" -}}
{{- with .Values.controller.archive.tls }}
{{- if .mode }}
- name: PGSSLMODE
  value: {{ .mode | quote }}
{{- end }}
{{- if .secret }}
- name: PGSSLROOTCERT
  value: /etc/cancel-operator/archive-tls/ca.crt
{{- if .clientCert }}
- name: PGSSLCERT
  value: /etc/cancel-operator/archive-tls/tls.crt
- name: PGSSLKEY
  value: /etc/cancel-operator/archive-tls/tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "cancel-operator.archiveTlsMount" -}}
- name: archive-tls
  mountPath: /etc/cancel-operator/archive-tls
  readOnly: true
{{- end -}}

{{- define "cancel-operator.archiveTlsVolume" -}}
- name: archive-tls
  secret:
    secretName: {{ .Values.controller.archive.tls.secret | quote }}
    defaultMode: 0440
{{- end -}}
