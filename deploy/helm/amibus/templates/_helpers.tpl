{{/*
Names and labels.
*/}}
{{- define "amibus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "amibus.fullname" -}}
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

{{/* Name of one program's objects: <fullname>-ingest, <fullname>-actor, <fullname>-state. */}}
{{- define "amibus.componentName" -}}
{{- printf "%s-%s" (include "amibus.fullname" .root | trunc 56 | trimSuffix "-") .component }}
{{- end }}

{{- define "amibus.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "amibus.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: amibus
{{- end }}

{{- define "amibus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "amibus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one program: dict "root" $ "component" "ingest". */}}
{{- define "amibus.componentLabels" -}}
{{ include "amibus.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "amibus.componentSelectorLabels" -}}
{{ include "amibus.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "amibus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "amibus.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "amibus.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Secrets.
*/}}
{{- define "amibus.secretName" -}}
{{- default (printf "%s-secrets" (include "amibus.fullname" . | trunc 55 | trimSuffix "-")) .Values.secrets.existingSecret }}
{{- end }}

{{/* Where the Secret's keys are mounted; a key K is the file <dir>/K. */}}
{{- define "amibus.secretDir" -}}/etc/amibus/secrets{{- end }}

{{- define "amibus.configDir" -}}/etc/amibus/config{{- end }}

{{/*
The Secret keys the configuration reads as files, as a YAML list of strings. The
pods mount exactly these, so a key missing from an existing Secret stops the pod
at start with the key's name instead of a confusing error later.
*/}}
{{- define "amibus.secretFileKeys" -}}
{{- $keys := list }}
{{- range .Values.nodes }}
{{- $keys = append $keys (printf "%s.secret" .name) }}
{{- if .actor_username }}
{{- $keys = append $keys (printf "%s.actor_secret" .name) }}
{{- end }}
{{- end }}
{{- if eq .Values.nats.auth "creds" }}
{{- $keys = append $keys "nats.creds" }}
{{- end }}
{{- if eq .Values.nats.auth "nkey" }}
{{- $keys = append $keys "nats.nkey" }}
{{- end }}
{{- if .Values.nats.tls.ca }}
{{- $keys = append $keys "nats.ca.crt" }}
{{- end }}
{{- if .Values.nats.tls.client_cert }}
{{- $keys = append $keys "nats.tls.crt" }}
{{- $keys = append $keys "nats.tls.key" }}
{{- end }}
{{- toYaml $keys }}
{{- end }}

{{/* Environment variables the configuration expands: name -> Secret key, as YAML. */}}
{{- define "amibus.secretEnv" -}}
{{- $env := dict }}
{{- if eq .Values.nats.auth "token" }}
{{- $_ := set $env "NATS_TOKEN" "nats.token" }}
{{- end }}
{{- if eq .Values.nats.auth "user_password" }}
{{- $_ := set $env "NATS_PASSWORD" "nats.password" }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/*
Checks that stop a release that could not work, or that could leak or duplicate.
Included by the ConfigMap, which every release renders.
*/}}
{{- define "amibus.validate" -}}
{{- if not .Values.nats.url }}
{{- fail "nats.url is required: the chart does not run NATS (see the chart's README)" }}
{{- end }}
{{- if and (gt (int .Values.ingest.replicas) 1) (not .Values.ingest.ha.enabled) }}
{{- fail (printf "ingest.replicas is %d but ingest.ha.enabled is false: without leases every replica would publish every node's events; set ingest.ha.enabled=true" (int .Values.ingest.replicas)) }}
{{- end }}
{{- if and .Values.state.enabled (gt (int .Values.state.replicas) 1) (not .Values.state.ha.enabled) }}
{{- fail (printf "state.replicas is %d but state.ha.enabled is false: without leases every replica would write every node's keys and checkpoint; set state.ha.enabled=true" (int .Values.state.replicas)) }}
{{- end }}
{{- $seen := dict }}
{{- range $i, $n := .Values.nodes }}
{{- if not (kindIs "map" $n) }}
{{- fail (printf "nodes[%d]: must be a map with name, address, username" $i) }}
{{- end }}
{{- if not $n.name }}
{{- fail (printf "nodes[%d].name: missing" $i) }}
{{- end }}
{{- if not (regexMatch "^[A-Za-z0-9_-]+$" (toString $n.name)) }}
{{- fail (printf "nodes[%d].name: %q is not a NATS subject token ([A-Za-z0-9_-]+)" $i (toString $n.name)) }}
{{- end }}
{{- if hasKey $seen (toString $n.name) }}
{{- fail (printf "nodes[%d].name: %q is used twice" $i (toString $n.name)) }}
{{- end }}
{{- $_ := set $seen (toString $n.name) true }}
{{- if not $n.address }}
{{- fail (printf "nodes[%d].address: missing" $i) }}
{{- end }}
{{- range $k := list "secret" "secret_file" "actor_secret" "actor_secret_file" }}
{{- if hasKey $n $k }}
{{- fail (printf "nodes[%d].%s: secrets do not belong in nodes (they would land in the ConfigMap); use secrets.nodes.%s or secrets.existingSecret" $i $k (toString $n.name)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.secrets.existingSecret }}
{{- if or .Values.secrets.nodes (.Values.secrets.nats.token) (.Values.secrets.nats.password) (.Values.secrets.nats.creds) (.Values.secrets.nats.nkey) (.Values.secrets.nats.ca) (.Values.secrets.nats.cert) (.Values.secrets.nats.key) }}
{{- fail "secrets.existingSecret is set: leave secrets.nodes and secrets.nats empty (the chart would ignore them)" }}
{{- end }}
{{- else }}
{{- range $name, $_ := .Values.secrets.nodes }}
{{- if not (hasKey $seen $name) }}
{{- fail (printf "secrets.nodes.%s: no node of that name in nodes" $name) }}
{{- end }}
{{- end }}
{{- range $n := .Values.nodes }}
{{- $s := get $.Values.secrets.nodes (toString $n.name) | default dict }}
{{- if not $s.secret }}
{{- fail (printf "secrets.nodes.%s.secret: missing (or set secrets.existingSecret)" (toString $n.name)) }}
{{- end }}
{{- if and $n.actor_username (not $s.actor_secret) }}
{{- fail (printf "secrets.nodes.%s.actor_secret: missing: the node has an actor_username" (toString $n.name)) }}
{{- end }}
{{- end }}
{{- $need := dict "token" "secrets.nats.token" "user_password" "secrets.nats.password" "creds" "secrets.nats.creds" "nkey" "secrets.nats.nkey" }}
{{- $field := dict "token" .Values.secrets.nats.token "user_password" .Values.secrets.nats.password "creds" .Values.secrets.nats.creds "nkey" .Values.secrets.nats.nkey }}
{{- if and (hasKey $need .Values.nats.auth) (not (get $field .Values.nats.auth)) }}
{{- fail (printf "%s: missing: nats.auth is %s" (get $need .Values.nats.auth) .Values.nats.auth) }}
{{- end }}
{{- if and .Values.nats.tls.ca (not .Values.secrets.nats.ca) }}
{{- fail "secrets.nats.ca: missing: nats.tls.ca is true" }}
{{- end }}
{{- if and .Values.nats.tls.client_cert (or (not .Values.secrets.nats.cert) (not .Values.secrets.nats.key)) }}
{{- fail "secrets.nats.cert and secrets.nats.key: missing: nats.tls.client_cert is true" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.nats.auth "user_password") (not .Values.nats.user) }}
{{- fail "nats.user: missing: nats.auth is user_password" }}
{{- end }}
{{- end }}

{{/*
The configuration file of one program: dict "root" $ "component" "ingest"|"actor"|"state"
"port" N. Only non-secret values: secrets are file paths or ${ENV} references.
*/}}
{{- define "amibus.config" -}}
{{- $v := .root.Values }}
{{- $secretDir := include "amibus.secretDir" .root }}
{{- $nats := dict "url" $v.nats.url "subject_prefix" $v.nats.subject_prefix }}
{{- with $v.nats.name }}{{ $_ := set $nats "name" . }}{{ end }}
{{- if eq $v.nats.auth "token" }}
{{- $_ := set $nats "token" "${NATS_TOKEN}" }}
{{- else if eq $v.nats.auth "user_password" }}
{{- $_ := set $nats "user" $v.nats.user }}
{{- $_ := set $nats "password" "${NATS_PASSWORD}" }}
{{- else if eq $v.nats.auth "creds" }}
{{- $_ := set $nats "creds_file" (printf "%s/nats.creds" $secretDir) }}
{{- else if eq $v.nats.auth "nkey" }}
{{- $_ := set $nats "nkey_file" (printf "%s/nats.nkey" $secretDir) }}
{{- end }}
{{- $tls := dict }}
{{- if $v.nats.tls.ca }}{{ $_ := set $tls "ca_file" (printf "%s/nats.ca.crt" $secretDir) }}{{ end }}
{{- if $v.nats.tls.client_cert }}
{{- $_ := set $tls "cert_file" (printf "%s/nats.tls.crt" $secretDir) }}
{{- $_ := set $tls "key_file" (printf "%s/nats.tls.key" $secretDir) }}
{{- end }}
{{- if $v.nats.tls.insecure_skip_verify }}{{ $_ := set $tls "insecure_skip_verify" true }}{{ end }}
{{- if $tls }}{{ $_ := set $nats "tls" $tls }}{{ end }}
{{- $nodes := list }}
{{- range (ternary (list) $v.nodes (default false .withoutNodes)) }}
{{- $n := deepCopy . }}
{{- $_ := set $n "secret_file" (printf "%s/%s.secret" $secretDir .name) }}
{{- if .actor_username }}
{{- $_ := set $n "actor_secret_file" (printf "%s/%s.actor_secret" $secretDir .name) }}
{{- end }}
{{- $nodes = append $nodes $n }}
{{- end }}
{{- $cfg := dict "nats" $nats "nodes" $nodes "http" (dict "listen" (printf "0.0.0.0:%d" (int .port))) }}
{{- range $section, $body := $v.config }}
{{- if $body }}{{ $_ := set $cfg $section (deepCopy $body) }}{{ end }}
{{- end }}
{{- $ingest := get $cfg "ingest" | default dict }}
{{- $_ := set $ingest "ha" (deepCopy $v.ingest.ha) }}
{{- $_ := set $cfg "ingest" $ingest }}
{{- $state := get $cfg "state" | default dict }}
{{- $_ := set $state "ha" (deepCopy $v.state.ha) }}
{{- $_ := set $cfg "state" $state }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Pod spec shared by the programs: dict "root" $ "component" "ingest"|"actor"|"state"
"binary" "ami-ingest"|"ami-actor"|"ami-state" "values" <component values>.
*/}}
{{- define "amibus.podSpec" -}}
{{- $root := .root }}
{{- $c := .values }}
{{- $secretKeys := include "amibus.secretFileKeys" $root | fromYamlArray }}
{{- $secretEnv := include "amibus.secretEnv" $root | fromYaml }}
serviceAccountName: {{ include "amibus.serviceAccountName" $root }}
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
{{- with $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
containers:
  - name: {{ .binary }}
    image: {{ include "amibus.image" $root | quote }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: [{{ printf "/%s" .binary | quote }}]
    args:
      - --config
      - {{ printf "%s/%s.yaml" (include "amibus.configDir" $root) .binary | quote }}
      {{- if has .component (list "ingest" "actor" "state") }}
      # Node list changes reach the pod by the ConfigMap and Secret volume
      # updates and are applied by a live reload, without a restart.
      - --watch-config
      {{- end }}
    ports:
      - name: http
        containerPort: {{ $c.port }}
        protocol: TCP
    {{- if or $secretEnv $c.extraEnv }}
    env:
      {{- range $name, $key := $secretEnv }}
      - name: {{ $name }}
        valueFrom:
          secretKeyRef:
            name: {{ include "amibus.secretName" $root }}
            key: {{ $key }}
      {{- end }}
      {{- with $c.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- end }}
    livenessProbe:
      httpGet:
        path: /healthz
        port: http
      {{- toYaml $c.livenessProbe | nindent 6 }}
    readinessProbe:
      httpGet:
        path: /readyz
        port: http
      {{- toYaml $c.readinessProbe | nindent 6 }}
    resources:
      {{- toYaml $c.resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: {{ include "amibus.configDir" $root }}
        readOnly: true
      {{- if $secretKeys }}
      - name: secrets
        mountPath: {{ include "amibus.secretDir" $root }}
        readOnly: true
      {{- end }}
      {{- with $c.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "amibus.fullname" $root }}-config
  {{- if $secretKeys }}
  - name: secrets
    secret:
      secretName: {{ include "amibus.secretName" $root }}
      # Readable by the pod's group (fsGroup) only.
      defaultMode: 0440
      {{- if $root.Values.secrets.existingSecret }}
      # A Secret of yours may hold more than amibus reads: only these keys.
      # (So a node added rolls the pods.)
      items:
        {{- range $secretKeys }}
        - key: {{ . }}
          path: {{ . }}
        {{- end }}
      {{- end }}
      {{- /* The chart's own Secret holds only what the configuration reads:
      mounted whole, its node keys are not in the pod template, and a node
      added is a live reload, not a restart. */}}
  {{- end }}
  {{- with $c.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with $c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $c.topologySpreadConstraints | nindent 2 }}
{{- else if $root.Values.spreadAcrossNodes }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "amibus.componentSelectorLabels" (dict "root" $root "component" .component) | nindent 8 }}
{{- end }}
{{- end }}

{{/*
What the pods of a program that reloads its node list (ingest, actor, state) must
restart for, as a checksum: its configuration without the node list, and
the Secret's NATS credentials. A change to the nodes (and their AMI
secrets) only is applied by a live reload (--watch-config) and leaves the
pod template as it is. Called with (dict "root" . "component" "ingest").
*/}}
{{- define "amibus.restartChecksum" -}}
{{- $root := .root }}
{{- $port := (index $root.Values .component).port }}
{{- $cfg := include "amibus.config" (dict "root" $root "component" .component "port" $port "withoutNodes" true) }}
{{- $sec := dict "existingSecret" $root.Values.secrets.existingSecret "nats" $root.Values.secrets.nats "auth" $root.Values.nats.auth }}
{{- printf "%s\n%s" $cfg (toYaml $sec) | sha256sum }}
{{- end }}
