// The text of `opa-sync --help`.
export const USAGE = `opa-sync: loads Rego policies and Kubernetes data into OPA, as kube-mgmt does,
and serves the same policies as OPA bundles.

Usage:
  opa-sync [flags]

Flags:
  -h, --help       show this help
  -v, --version    print the version

The sidecar, replication, bundle-server and local-folder modes arrive with their flags; see README.md.
`;
