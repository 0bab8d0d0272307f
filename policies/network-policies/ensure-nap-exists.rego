# Use case 1 of the network-policy article, in Rego v1 syntax for opa-sync's default data layout
# (data.kubernetes.networkpolicies[<namespace>][<name>]): a Pod labelled app=prop is refused unless
# some NetworkPolicy selects app=prop pods.
package kubernetes.admission

import rego.v1

import data.kubernetes.networkpolicies

deny contains msg if {
	input.request.kind.kind == "Pod"
	input.request.object.metadata.labels.app == "prop"
	not prop_pods_protected
	msg := sprintf(
		"The Pod: %v could not be created because it is missing an associated Network Security Policy.",
		[input.request.object.metadata.name],
	)
}

prop_pods_protected if networkpolicies[_][_].spec.podSelector.matchLabels.app == "prop"
