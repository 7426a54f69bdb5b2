{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "secret-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, else "<release>-<chart>", or just the
release name when it already contains the chart name.
*/}}
{{- define "secret-relay.fullname" -}}
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

{{- define "secret-relay.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "secret-relay.labels" -}}
helm.sh/chart: {{ include "secret-relay.chart" . }}
{{ include "secret-relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{/* Labels that select the pods (immutable in a Deployment: never add to them). */}}
{{- define "secret-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "secret-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "secret-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "secret-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace watched when namespaceScope.enabled. */}}
{{- define "secret-relay.watchNamespace" -}}
{{- default .Release.Namespace .Values.namespaceScope.namespace }}
{{- end }}

{{/* "true" when ClusterSecretStores (and Namespaces) are watched. */}}
{{- define "secret-relay.clusterStores" -}}
{{- if and .Values.clusterSecretStores.enabled (not .Values.namespaceScope.enabled) }}true{{ end }}
{{- end }}

{{- define "secret-relay.clusterExternalSecrets" -}}
{{- if and .Values.clusterExternalSecrets.enabled (not .Values.namespaceScope.enabled) }}true{{ end }}
{{- end }}

{{- define "secret-relay.leaseName" -}}
{{- default (include "secret-relay.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "secret-relay.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
RBAC rules for the namespaced kinds, shared by the ClusterRole (all namespaces) and the Role
(namespaceScope). Each verb matches a call in src/ (see README.md, "Permissions").
*/}}
{{- define "secret-relay.namespacedRules" -}}
# ExternalSecrets and SecretStores: watched (cached), their status written.
- apiGroups: [secret-relay.dev]
  resources: [externalsecrets, secretstores]
  verbs: [get, list, watch]
- apiGroups: [secret-relay.dev]
  resources: [externalsecrets/status, secretstores/status]
  verbs: [patch]
# Setting the Secret's ownerReference with blockOwnerDeletion needs this where the
# OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift).
- apiGroups: [secret-relay.dev]
  resources: [externalsecrets/finalizers]
  verbs: [update]
# The finalizer secret-relay.dev/revoke-leases of an ExternalSecret whose Secret holds Vault
# leases (VaultDynamicSecret): put on and taken off with a patch of metadata.finalizers.
- apiGroups: [secret-relay.dev]
  resources: [externalsecrets]
  verbs: [patch]
# Generators named by dataFrom[].sourceRef.generatorRef, read at each sync that needs them.
- apiGroups: [generators.secret-relay.dev]
  resources: [passwords, vaultdynamicsecrets]
  verbs: [get]
# Managed Secrets: a metadata-only, label-filtered watch; reads of the target and of
# credential Secrets; writes by server-side apply (patch, plus create for a new Secret);
# delete for deletionPolicy Delete.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
# CA bundles (caProvider), SOPS documents (remoteRef.key configmap:NAME/KEY) and
# template.templateFrom ConfigMaps (templateFrom Secrets: the secrets rule above).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
{{- if .Values.rolloutRestart.enabled }}
# rolloutRestartTargets: the pod template annotation of a workload whose Secret changed.
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [patch]
- apiGroups: [argoproj.io]
  resources: [rollouts]
  verbs: [patch]
{{- end }}
# TokenRequest for Vault kubernetes/JWT auth and AWS web identity (serviceAccountRef).
- apiGroups: [""]
  resources: [serviceaccounts/token]
  verbs: [create]
# The eks.amazonaws.com/role-arn annotation of a serviceAccountRef without a store role (IRSA).
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get]
# Events on ExternalSecrets (Created, Updated, Deleted, SyncFailed).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
