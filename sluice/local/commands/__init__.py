"""`sluice local` subcommands beyond the lifecycle (up/apply/delete/status/report/down):
`kubeconfig`, `logs`, and the kn-style `service` / `revision` views. They read the files a running
instance keeps in its state directory (`status.json`, `kubeconfig`, `logs/`), so they start fast
and load no Kubernetes client."""
