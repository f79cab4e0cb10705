{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "canaryctl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Base name of every object: the release name, unless it already contains the chart name. */}}
{{- define "canaryctl.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "canaryctl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "canaryctl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "controller"). */}}
{{- define "canaryctl.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canaryctl.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects; same arguments as canaryctl.selectorLabels. */}}
{{- define "canaryctl.componentLabels" -}}
{{ include "canaryctl.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Image of one role: (dict "root" $ "role" "controller" "image" .Values.controller.image). */}}
{{- define "canaryctl.image" -}}
{{- $repository := default (printf "%s/%s" .root.Values.image.registry .role) .image.repository }}
{{- $tag := default (default .root.Chart.AppVersion .root.Values.image.tag) .image.tag }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* The sidecar image the injector adds to meshed pods. */}}
{{- define "canaryctl.sidecarImage" -}}
{{- default (include "canaryctl.image" (dict "root" . "role" "sidecar" "image" (dict))) .Values.mesh.injector.sidecarImage }}
{{- end }}

{{/* ServiceAccount name of one component: (dict "root" $ "component" "controller"). */}}
{{- define "canaryctl.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create }}
{{- printf "%s-%s" (include "canaryctl.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/* Name of the injector's Service; the serving certificate is issued for it. */}}
{{- define "canaryctl.injectorService" -}}
{{- printf "%s-injector" (include "canaryctl.fullname" .) }}
{{- end }}

{{/* Name of the Secret holding the injector's TLS key pair (and ca.crt). */}}
{{- define "canaryctl.injectorTLSSecret" -}}
{{- printf "%s-injector-tls" (include "canaryctl.fullname" .) }}
{{- end }}

{{/* Name of the mesh control plane's Service, the sidecars' xDS address. */}}
{{- define "canaryctl.meshService" -}}
{{- printf "%s-mesh" (include "canaryctl.fullname" .) }}
{{- end }}

{{/* Fails the render on value combinations that cannot work. */}}
{{- define "canaryctl.validate" -}}
{{- if not (or .Values.controller.enabled .Values.mesh.enabled .Values.loadtester.enabled) }}
{{- fail "controller.enabled, mesh.enabled and loadtester.enabled are all false: nothing to install" }}
{{- end }}
{{- if not (has .Values.rbac.scope (list "cluster" "namespace")) }}
{{- fail (printf "rbac.scope must be \"cluster\" or \"namespace\", not %q" .Values.rbac.scope) }}
{{- end }}
{{- if and (eq .Values.rbac.scope "namespace") (not .Values.watchNamespaces) }}
{{- fail "rbac.scope=namespace needs watchNamespaces: the namespaces to grant the controller access to" }}
{{- end }}
{{- if not (has .Values.mesh.certificate.source (list "managed" "certManager")) }}
{{- fail (printf "mesh.certificate.source must be \"managed\" or \"certManager\", not %q" .Values.mesh.certificate.source) }}
{{- end }}
{{- if not (has .Values.mesh.injector.failurePolicy (list "Ignore" "Fail")) }}
{{- fail (printf "mesh.injector.failurePolicy must be \"Ignore\" or \"Fail\", not %q" .Values.mesh.injector.failurePolicy) }}
{{- end }}
{{- $l := .Values.loadtester }}
{{- if not (has $l.deployment (list "shared" "perNamespace")) }}
{{- fail (printf "loadtester.deployment must be \"shared\" or \"perNamespace\", not %q" $l.deployment) }}
{{- end }}
{{- if and $l.enabled (eq $l.deployment "perNamespace") (not $l.namespaces) }}
{{- fail "loadtester.deployment=perNamespace needs loadtester.namespaces: the namespaces to run one in" }}
{{- end }}
{{- if and $l.enabled (not .Values.controller.enabled) .Values.networkPolicy.enabled (eq $l.deployment "shared") (not $l.networkPolicy.from) }}
{{- fail "controller.enabled=false: name the load tester's callers in loadtester.networkPolicy.from, e.g. Flagger's pods [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: flagger-system}}, podSelector: {matchLabels: {app.kubernetes.io/name: flagger}}}], or set loadtester.enabled=false" }}
{{- end }}
{{- if not (has $l.auth.mode (list "none" "token" "serviceAccount")) }}
{{- fail (printf "loadtester.auth.mode must be \"none\", \"token\" or \"serviceAccount\", not %q" $l.auth.mode) }}
{{- end }}
{{- if and $l.enabled (eq $l.auth.mode "token") (not $l.auth.existingSecret) (not $l.namespaces) }}
{{- fail "loadtester.auth.mode=token needs loadtester.namespaces (a token is made for each) or loadtester.auth.existingSecret" }}
{{- end }}
{{- end }}

{{/* NetworkPolicy egress rule: DNS, to wherever the cluster's resolver is. */}}
{{- define "canaryctl.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/* Where load tests may go unless loadtester.networkPolicy.to says otherwise. */}}
{{- define "canaryctl.loadTargets" -}}
- namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: NotIn
        values: [{{ .Release.Namespace }}]
{{ include "canaryctl.outsideButMetadata" . }}
{{- end }}

{{/* NetworkPolicy peers: any address but link-local ones and the cloud metadata services (169.254.169.254
on AWS, GCP and Azure, 169.254.170.2 for ECS tasks, 100.100.100.200 on Alibaba, fd00:ec2::254 on AWS
over IPv6), which hand the node's cloud credentials to any caller. */}}
{{- define "canaryctl.outsideButMetadata" -}}
- ipBlock:
    cidr: 0.0.0.0/0
    except: [169.254.0.0/16, 100.100.100.200/32]
- ipBlock:
    cidr: ::/0
    except: [fe80::/10, fd00:ec2::254/128]
{{- end }}

{{/* NetworkPolicy egress rule: the Kubernetes API server (networkPolicy.apiServer). */}}
{{- define "canaryctl.apiServerEgress" -}}
{{- $api := .Values.networkPolicy.apiServer }}
- ports:
    {{- range $api.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $api.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Pod-level fields shared by every component: (dict "root" $ "component" "controller" "values" .Values.controller). */}}
{{- define "canaryctl.podSpecCommon" -}}
serviceAccountName: {{ include "canaryctl.serviceAccountName" (dict "root" .root "component" .component) }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
