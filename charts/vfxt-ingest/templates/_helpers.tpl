{{/* Name of the chart, overridable. */}}
{{- define "vfxt-ingest.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name of every object. */}}
{{- define "vfxt-ingest.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "vfxt-ingest.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "vfxt-ingest.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "vfxt-ingest.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "vfxt-ingest.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vfxt-ingest
{{- end }}

{{/* Labels that select the operator pods (immutable in a Deployment: never add to them). */}}
{{- define "vfxt-ingest.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vfxt-ingest.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "vfxt-ingest.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vfxt-ingest.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vfxt-ingest.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "vfxt-ingest.leaseName" -}}
{{- default (printf "%s-leader" (include "vfxt-ingest.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The operator's defaults for scan and copy pods (VFXT_INGEST_WORKER_DEFAULTS), in the shape of an
IngestJob's spec.worker: only the fields that are set.
*/}}
{{- define "vfxt-ingest.workerDefaults" -}}
{{- $w := dict }}
{{- with .Values.worker.image }}{{ $_ := set $w "image" . }}{{ end }}
{{- with .Values.worker.pullPolicy }}{{ $_ := set $w "imagePullPolicy" . }}{{ end }}
{{- with .Values.worker.resources }}{{ $_ := set $w "resources" . }}{{ end }}
{{- with .Values.worker.nodeSelector }}{{ $_ := set $w "nodeSelector" . }}{{ end }}
{{- with .Values.worker.tolerations }}{{ $_ := set $w "tolerations" . }}{{ end }}
{{- with .Values.worker.imagePullSecrets }}{{ $_ := set $w "imagePullSecrets" . }}{{ end }}
{{- with .Values.worker.priorityClassName }}{{ $_ := set $w "priorityClassName" . }}{{ end }}
{{- with .Values.worker.affinity }}{{ $_ := set $w "affinity" . }}{{ end }}
{{- with .Values.worker.topologySpreadConstraints }}{{ $_ := set $w "topologySpreadConstraints" . }}{{ end }}
{{- with .Values.worker.podLabels }}{{ $_ := set $w "labels" . }}{{ end }}
{{- with .Values.worker.podAnnotations }}{{ $_ := set $w "annotations" . }}{{ end }}
{{- toJson $w }}
{{- end }}

{{/*
A policy rules dict as a CEL map literal. CEL refuses a map whose values differ in type (a list beside
a bool), so each value is wrapped in dyn(); JSON scalars and lists of strings are CEL literals as they are.
*/}}
{{- define "vfxt-ingest.celRules" -}}
{{- $entries := list }}
{{- range $k, $v := . }}
{{- $entries = append $entries (printf "%s: dyn(%s)" (toJson $k) (toJson $v)) }}
{{- end }}
{{- printf "{%s}" (join ", " $entries) }}
{{- end }}

{{/*
The admin policy (values: policy) as a CEL value for the ValidatingAdmissionPolicy: default, namespaces
and the operator's worker image (the images rule's default).
*/}}
{{- define "vfxt-ingest.celPolicy" -}}
{{- $namespaces := list }}
{{- range $ns, $rules := .Values.policy.namespaces }}
{{- $namespaces = append $namespaces (printf "%s: dyn(%s)" (toJson $ns) (include "vfxt-ingest.celRules" $rules)) }}
{{- end }}
{{- $image := default (include "vfxt-ingest.image" .) .Values.worker.image }}
{{- printf "{'default': dyn(%s), 'namespaces': dyn({%s}), 'operatorImage': dyn(%s)}" (include "vfxt-ingest.celRules" .Values.policy.default) (join ", " $namespaces) (toJson $image) }}
{{- end }}
