{{/* Labels every object carries (docs/kubernetes.md: managed-by is rdbg, also under helm). */}}
{{- define "rdbg.labels" -}}
app.kubernetes.io/name: rdbg
app.kubernetes.io/managed-by: rdbg
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* The manager pods' selector: stable across versions. */}}
{{- define "rdbg.selector" -}}
app.kubernetes.io/name: rdbg
app.kubernetes.io/component: manager
{{- end }}

{{/* Cluster-scoped objects carry the namespace in their name unless it is "rdbg". */}}
{{- define "rdbg.clusterName" -}}
{{- if eq .ctx.Release.Namespace "rdbg" }}{{ .base }}{{ else }}{{ .base }}-{{ .ctx.Release.Namespace }}{{ end }}
{{- end }}

{{/*
The webhook TLS: a CA and a serving certificate for rdbg-manager.<ns>.svc,
made once per render and kept in .Values so that the Secret, the
Deployment's checksum and the webhook's caBundle agree.
*/}}
{{- define "rdbg.tls" -}}
{{- if not (hasKey .Values "_rdbgTls") -}}
{{- $ns := .Release.Namespace -}}
{{- $ca := genCA (printf "rdbg-webhook-ca.%s" $ns) 365 -}}
{{- $names := list (printf "rdbg-manager.%s.svc" $ns) (printf "rdbg-manager.%s.svc.cluster.local" $ns) -}}
{{- $cert := genSignedCert (first $names) nil $names 365 $ca -}}
{{- $_ := set .Values "_rdbgTls" (dict "caCrt" $ca.Cert "tlsCrt" $cert.Cert "tlsKey" $cert.Key) -}}
{{- end -}}
{{- end }}
