{{/* Names and labels shared by the templates. */}}

{{- define "cicada.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cicada.master" -}}{{ include "cicada.fullname" . }}-master{{- end -}}
{{- define "cicada.worker" -}}{{ include "cicada.fullname" . }}-worker{{- end -}}

{{- define "cicada.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cicada.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret that holds the cluster token: the user's, or the one this chart generates. */}}
{{- define "cicada.tokenSecret" -}}
{{- .Values.clusterToken.existingSecret | default (printf "%s-token" (include "cicada.fullname" .)) -}}
{{- end -}}

{{- define "cicada.checkMode" -}}
{{- if not (has .Values.mode (list "web" "headless")) -}}
{{- fail (printf "mode must be web or headless, not %q" .Values.mode) -}}
{{- end -}}
{{- end -}}

{{/* What the master and every worker share: the test's selection and the token. */}}
{{- define "cicada.commonEnv" -}}
- name: CICADA_CLUSTER_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "cicada.tokenSecret" . }}
      key: {{ .Values.clusterToken.key }}
{{- with .Values.tags }}
- name: CICADA_TAGS
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.excludeTags }}
- name: CICADA_EXCLUDE_TAGS
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The image, the security context and the scratch volume every cicada container has. */}}
{{- define "cicada.container" -}}
image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}
