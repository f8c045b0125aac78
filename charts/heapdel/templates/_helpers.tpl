{{/*
The chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "heapdel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: release-chart, or the release name alone when it already holds the
chart name; truncated to 63 characters.
*/}}
{{- define "heapdel.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "heapdel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "heapdel.labels" -}}
helm.sh/chart: {{ include "heapdel.chart" . }}
{{ include "heapdel.selectorLabels" . }}
app.kubernetes.io/version: {{ include "heapdel.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: heapdel
{{- end }}

{{/*
Selector labels: the stable subset that pods are selected by.
*/}}
{{- define "heapdel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "heapdel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount name.
*/}}
{{- define "heapdel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "heapdel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image tag: image.tag, or the chart's appVersion.
*/}}
{{- define "heapdel.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
The image reference; a digest pins it.
*/}}
{{- define "heapdel.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "heapdel.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
The Secret that holds the credentials: the existing one, or the one this chart
renders.
*/}}
{{- define "heapdel.secretName" -}}
{{- default (include "heapdel.fullname" .) .Values.credentials.existingSecret }}
{{- end }}

{{/*
The Secret that holds the NATS TLS files.
*/}}
{{- define "heapdel.tlsSecretName" -}}
{{- default (include "heapdel.secretName" .) .Values.nats.tls.existingSecret }}
{{- end }}

{{/*
"true" when the chart renders the credentials Secret from values.
*/}}
{{- define "heapdel.renderSecret" -}}
{{- if not .Values.credentials.existingSecret }}true{{ end }}
{{- end }}

{{/*
"true" when an identity hash key is mounted.
*/}}
{{- define "heapdel.identityHashKey" -}}
{{- if .Values.credentials.existingSecret }}
{{- if .Values.credentials.keys.identityHashKey }}true{{ end }}
{{- else if .Values.credentials.identityHashKey }}true{{ end }}
{{- end }}

{{/*
The key of the identity hash key in the Secret.
*/}}
{{- define "heapdel.identityHashKeyKey" -}}
{{- default "identity-hash-key" .Values.credentials.keys.identityHashKey }}
{{- end }}

{{/*
"true" when a PodDisruptionBudget is rendered: enabled true, or auto with more than
one replica.
*/}}
{{- define "heapdel.pdbEnabled" -}}
{{- $e := toString .Values.podDisruptionBudget.enabled }}
{{- if or (eq $e "true") (and (eq $e "auto") (gt (int .Values.replicaCount) 1)) }}true{{ end }}
{{- end }}

{{/*
"true" when the PrometheusRule carries HeapdelDown: prometheusRule.downAlert true, or
auto with the ServiceMonitor on. HeapdelDown fires on absent(up{...}), so without a
scrape that yields the selector's series it would fire for ever.
*/}}
{{- define "heapdel.downAlert" -}}
{{- $e := toString .Values.prometheusRule.downAlert }}
{{- if or (eq $e "true") (and (eq $e "auto") .Values.serviceMonitor.enabled) }}true{{ end }}
{{- end }}

{{/*
PromQL label matchers that select this release's series.
*/}}
{{- define "heapdel.promSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "heapdel.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
Mount paths of the files heapdel reads.
*/}}
{{- define "heapdel.credentialsDir" -}}/etc/heapdel/credentials{{- end }}
{{- define "heapdel.natsAuthDir" -}}/etc/heapdel/nats{{- end }}
{{- define "heapdel.natsTLSDir" -}}/etc/heapdel/nats-tls{{- end }}
{{- define "heapdel.caBundleDir" -}}/etc/heapdel/ca{{- end }}
{{- define "heapdel.caBundleFile" -}}ca-bundle.crt{{- end }}

{{/*
heapdel.validate stops rendering with one clear message when the values cannot work.
*/}}
{{- define "heapdel.validate" -}}
{{- $c := .Values.credentials }}
{{- if not $c.existingSecret }}
{{- if not (and $c.heapAppId $c.heapApiKey) }}
{{- fail "heapdel: no Heap credentials. Set credentials.existingSecret to a Secret holding the keys heap-app-id and heap-api-key (recommended), or set both credentials.heapAppId and credentials.heapApiKey to have the chart render one." }}
{{- end }}
{{- $auth := .Values.nats.auth }}
{{- if and (eq $auth "creds") (not $c.natsCreds) }}
{{- fail "heapdel: nats.auth is creds but credentials.natsCreds is empty. Set it, or use credentials.existingSecret." }}
{{- end }}
{{- if and (eq $auth "nkey") (not $c.natsNkey) }}
{{- fail "heapdel: nats.auth is nkey but credentials.natsNkey is empty. Set it, or use credentials.existingSecret." }}
{{- end }}
{{- if and (eq $auth "userPassword") (not (and $c.natsUser $c.natsPassword)) }}
{{- fail "heapdel: nats.auth is userPassword but credentials.natsUser or credentials.natsPassword is empty. Set both, or use credentials.existingSecret." }}
{{- end }}
{{- if and (eq $auth "token") (not $c.natsToken) }}
{{- fail "heapdel: nats.auth is token but credentials.natsToken is empty. Set it, or use credentials.existingSecret." }}
{{- end }}
{{- if not .Values.nats.tls.existingSecret }}
{{- if and .Values.nats.tls.ca (not $c.natsTlsCa) }}
{{- fail "heapdel: nats.tls.ca is true but credentials.natsTlsCa is empty. Set it, or use nats.tls.existingSecret or credentials.existingSecret." }}
{{- end }}
{{- if and .Values.nats.tls.clientCert (not (and $c.natsTlsCert $c.natsTlsKey)) }}
{{- fail "heapdel: nats.tls.clientCert is true but credentials.natsTlsCert or credentials.natsTlsKey is empty. Set both, or use nats.tls.existingSecret or credentials.existingSecret." }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (not .Values.nats.url) (gt (int .Values.replicaCount) 1) }}
{{- fail "heapdel: nats.url is empty, which starts an embedded NATS server in each pod; the pods would not share state. Set nats.url to your NATS cluster, or replicaCount to 1 to try heapdel out." }}
{{- end }}
{{- if and .Values.caBundle.configMap .Values.caBundle.secret }}
{{- fail "heapdel: caBundle.configMap and caBundle.secret are both set. Set one: the CA bundle comes from a ConfigMap or from a Secret." }}
{{- end }}
{{- if include "heapdel.pdbEnabled" . }}
{{- $r := int .Values.replicaCount }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- $max := toString $pdb.maxUnavailable }}
{{- $min := toString $pdb.minAvailable }}
{{- $blocks := "" }}
{{- if ne $max "" }}
{{- if or (eq $max "0") (eq $max "0%") }}
{{- $blocks = printf "maxUnavailable is %s" $max }}
{{- end }}
{{- else if hasSuffix "%" $min }}
{{- $pct := int (trimSuffix "%" $min) }}
{{- /* Kubernetes rounds a minAvailable percentage up. */}}
{{- if ge (div (add (mul $pct $r) 99) 100) $r }}
{{- $blocks = printf "minAvailable %s of %d replicas is every replica" $min $r }}
{{- end }}
{{- else if ge (int $min) $r }}
{{- $blocks = printf "minAvailable %s is not below replicaCount %d" $min $r }}
{{- end }}
{{- if $blocks }}
{{- fail (printf "heapdel: the PodDisruptionBudget would never allow an eviction (%s), so node drains and cluster upgrades would hang. Lower podDisruptionBudget.minAvailable below replicaCount, set maxUnavailable to 1 or more, raise replicaCount, or set podDisruptionBudget.enabled=false (with one replica, auto leaves it out)." $blocks) }}
{{- end }}
{{- end }}
{{- if and (not .Values.nats.url) (ne .Values.nats.auth "none") }}
{{- fail "heapdel: nats.auth is set but nats.url is empty (the embedded server takes no credentials). Set nats.url, or nats.auth to none." }}
{{- end }}
{{- end }}
