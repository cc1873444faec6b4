"""`sluice local`: the single-machine runtime (embedded Kubernetes API subset, process kubelet,
mini-controller, ingress router and the `sluice` CLI)."""
