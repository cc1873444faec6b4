{{/*
Checks that values.schema.json cannot express; each fails with a message naming the value to change.
Included once, from activator.yaml.
*/}}
{{- define "sluice.validate" -}}
{{- if ne .Release.Namespace .Values.knativeNamespace -}}
{{- fail (printf "sluice: install into the Knative Serving namespace: helm ... --namespace %s (the release namespace is %q; set knativeNamespace if Knative Serving lives elsewhere)" .Values.knativeNamespace .Release.Namespace) -}}
{{- end -}}
{{- $hpa := .Values.activator.hpa -}}
{{- if and $hpa.enabled (gt (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- fail (printf "sluice: activator.hpa.minReplicas (%v) must not exceed activator.hpa.maxReplicas (%v)" $hpa.minReplicas $hpa.maxReplicas) -}}
{{- end -}}
{{- if and $hpa.enabled (gt (int .Values.highAvailability.replicas) (int $hpa.maxReplicas)) -}}
{{- fail (printf "sluice: highAvailability.replicas (%v) must not exceed activator.hpa.maxReplicas (%v)" .Values.highAvailability.replicas $hpa.maxReplicas) -}}
{{- end -}}
{{- $missing := list -}}
{{- range $key := list "queueProxy" "activator" "autoscaler" -}}
{{- if and (or $.Values.useStockImages (index $.Values $key).useStockImage) (not (index $.Values.stockImages $key)) -}}
{{- $missing = append $missing (printf "stockImages.%s" $key) -}}
{{- end -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "sluice: useStockImages=true (the roll-back switch) or <component>.useStockImage=true needs %s: the images of the Knative Serving release you run, from its serving-core.yaml or recorded before installing Sluice (charts/sluice/README.md, \"Before you install\")" (join ", " $missing)) -}}
{{- end -}}
{{- if and $hpa.enabled (not (kindIs "invalid" .Values.activator.replicas)) -}}
{{- fail "sluice: activator.replicas is set but activator.hpa.enabled is true: the HPA owns the replica count; set activator.hpa.minReplicas instead, or activator.hpa.enabled=false" -}}
{{- end -}}
{{- end -}}

{{/*
Image reference of a component: the stock image when useStockImages or <component>.useStockImage, else
<registry>/<repository>@<digest> or <registry>/<repository>:<tag>. Call with (list $ "activator").
*/}}
{{- define "sluice.image" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- if or $root.Values.useStockImages (index $root.Values $component).useStockImage -}}
{{- index $root.Values.stockImages $component -}}
{{- else -}}
{{- $img := (index $root.Values $component).image -}}
{{- $digest := $img.digest -}}
{{- $base := printf "%s/%s" $root.Values.image.registry $img.repository -}}
{{- if $digest -}}
{{- printf "%s@%s" $base $digest -}}
{{- else -}}
{{- printf "%s:%s" $base ($img.tag | default $root.Values.image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The labels every stock data-plane object carries (component passed as the argument's second item). */}}
{{- define "sluice.knativeLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/name: knative-serving
app.kubernetes.io/version: {{ $root.Values.knativeVersion | quote }}
{{- end -}}

{{/*
Objects that exist in a stock install are annotated so that `helm uninstall` never deletes them (that would
take the Knative data plane down); README "Uninstall" puts the stock images back first.
*/}}
{{- define "sluice.keep" -}}
helm.sh/resource-policy: keep
{{- end -}}

{{- define "sluice.activatorReplicas" -}}
{{- $ha := int .Values.highAvailability.replicas -}}
{{- if .Values.activator.hpa.enabled -}}
{{- max (int .Values.activator.hpa.minReplicas) $ha -}}
{{- else if not (kindIs "invalid" .Values.activator.replicas) -}}
{{- max (int .Values.activator.replicas) $ha -}}
{{- else if gt $ha 1 -}}
{{- $ha -}}
{{- end -}}
{{- end -}}

{{- define "sluice.autoscalerReplicas" -}}
{{- max (int .Values.autoscaler.replicas) (int .Values.highAvailability.replicas) -}}
{{- end -}}
