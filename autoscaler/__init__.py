"""Sluice autoscaler: the KPA scaling algorithm, metric collection and stat server (CONTRACT.md §4).

Split by concern like Knative's `pkg/autoscaler`:

- `config`       `config-autoscaler` (§4.11) and a live-reload store
- `annotations`  per-revision annotations (§4.12)
- `resources`    decider spec, Metric spec and scale bounds from a PodAutoscaler (§4.4, §4.5)
- `aggregation`  1 s bucket windows: linear, weighted-exponential, sliding max (§4.8, §4.7 step 8)
- `scaling`      the decider (§4.7) and the multiscaler (§4.6)
- `collector`    per-revision bucket sets fed by scrapes and websocket stats (§4.8)
- `scraper`      pod / service scraping of queue-proxies on :9090 (§4.8)
- `statserver`   websocket stat server on :8080 (§4.9)
- `bucket`       FNV-1a ring key -> bucket mapping and bucket names (§4.10)
- `dropped`      counters for dropped stat payloads

The Kubernetes-facing half (kubernetes-asyncio only):

- `kube`           raw-JSON API calls, informers, the rate-limited work queue
- `conditions`     Knative condition sets on status dicts (Ready, transition-time grooming)
- `kpa`            pure KPA logic: scale-to-zero gate, SKS mode / activators, PA status (§4.3, §4.4)
- `reconciler`     the KPA PodAutoscaler and Metric reconcilers
- `podaccessor`    revision pods from the pod informer (§4.2, §4.8)
- `prober`         the activator probe before scale to zero (§4.4)
- `leaderelection` per-bucket Leases and bucket Service/EndpointSlice (§4.10)
- `forwarder`      stats for buckets other replicas own (§4.9, §4.10)
- `app`, `__main__` the process
"""
