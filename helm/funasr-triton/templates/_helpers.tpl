{{/* vim: set filetype=mustache: */}}
{{/*
Chart name, truncated to 63 characters (DNS-1123 label limit).
*/}}
{{- define "funasr-triton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified app name. Component suffixes ("-triton", "-frontend") are appended, so keep 48 characters.
*/}}
{{- define "funasr-triton.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "funasr-triton.triton.fullname" -}}
{{- printf "%s-triton" (include "funasr-triton.fullname" .) -}}
{{- end -}}

{{- define "funasr-triton.frontend.fullname" -}}
{{- printf "%s-frontend" (include "funasr-triton.fullname" .) -}}
{{- end -}}

{{- define "funasr-triton.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Standard labels (app.kubernetes.io/*) plus user commonLabels.
*/}}
{{- define "funasr-triton.labels" -}}
helm.sh/chart: {{ include "funasr-triton.chart" . }}
{{ include "funasr-triton.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: funasr-triton
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "funasr-triton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "funasr-triton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Component labels: call with (dict "ctx" $ "component" "triton") */}}
{{- define "funasr-triton.componentLabels" -}}
{{ include "funasr-triton.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "funasr-triton.componentSelectorLabels" -}}
{{ include "funasr-triton.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Image reference: registry/repository:tag, or @digest when a digest is set. Call with (dict "image" .Values.x.image "global" .Values.global "default" .Chart.AppVersion)
*/}}
{{- define "funasr-triton.image" -}}
{{- $registry := .image.registry -}}
{{- if and .global .global.imageRegistry -}}{{- $registry = .global.imageRegistry -}}{{- end -}}
{{- $ref := .image.repository -}}
{{- if $registry -}}{{- $ref = printf "%s/%s" $registry .image.repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (default .default .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "funasr-triton.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "funasr-triton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "funasr-triton.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Secret holding the frontend API keys (JSON list under key .Values.frontend.auth.secretKey) */}}
{{- define "funasr-triton.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "funasr-triton.fullname" .)) .Values.frontend.auth.existingSecret -}}
{{- end -}}

{{- define "funasr-triton.apiKeysEnabled" -}}
{{- if or .Values.frontend.auth.existingSecret .Values.frontend.auth.apiKeys -}}true{{- end -}}
{{- end -}}

{{/* Model repository path as Triton sees it */}}
{{- define "funasr-triton.modelRepositoryPath" -}}
{{- if eq .Values.modelRepository.type "remote" -}}
{{- .Values.modelRepository.remote.path -}}
{{- else -}}
{{- .Values.modelRepository.mountPath -}}
{{- end -}}
{{- end -}}

{{- define "funasr-triton.pvcName" -}}
{{- default (printf "%s-models" (include "funasr-triton.fullname" .)) .Values.modelRepository.pvc.existingClaim -}}
{{- end -}}

{{/* Triton gRPC address for the frontend (the internal-service entry point) */}}
{{- define "funasr-triton.tritonGrpcAddress" -}}
{{- printf "%s.%s.svc:%d" (include "funasr-triton.triton.fullname" .) .Release.Namespace (int .Values.triton.service.ports.grpc) -}}
{{- end -}}

{{/*
Fail the render on value combinations the schema cannot express.
*/}}
{{- define "funasr-triton.validateValues" -}}
{{- $messages := list -}}
{{- $mr := .Values.modelRepository -}}
{{- if eq $mr.type "remote" -}}
{{- if not (regexMatch "^(s3|gs|as)://.+" (toString $mr.remote.path)) -}}
{{- $messages = append $messages "modelRepository.remote.path must start with s3://, gs:// or as:// when modelRepository.type=remote" -}}
{{- end -}}
{{- if $mr.export.enabled -}}
{{- $messages = append $messages "modelRepository.export.enabled cannot be used with modelRepository.type=remote (Triton reads the bucket directly; export into it out of band)" -}}
{{- end -}}
{{- end -}}
{{- if and (eq $mr.type "emptyDir") (not $mr.export.enabled) -}}
{{- $messages = append $messages "modelRepository.type=emptyDir needs modelRepository.export.enabled=true (nothing would fill the repository)" -}}
{{- end -}}
{{- if and (hasPrefix "gpu-" .Values.triton.profile) (not .Values.triton.gpu.enabled) -}}
{{- $messages = append $messages (printf "triton.profile=%s needs triton.gpu.enabled=true" .Values.triton.profile) -}}
{{- end -}}
{{- range $c := list "triton" "frontend" -}}
{{- $a := (index $.Values $c).autoscaling -}}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- $messages = append $messages (printf "%s.autoscaling.minReplicas must not exceed maxReplicas" $c) -}}
{{- end -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}
