# Use case 2 of the network-policy article, in Rego v1 syntax: a NetworkPolicy that selects app=prop
# pods must admit them from app=frontend pods only, through exactly one ingress rule with one `from`.
# Unlike the article's version, every condition applies only to NetworkPolicies that select app=prop
# pods (the article's last two conditions would also refuse unrelated NetworkPolicies).
package kubernetes.admission

import rego.v1

deny contains msg if {
	violates_prop_app_policy
	msg := sprintf(
		"The Network Policy: %v could not be created because it violates the proprietary app security policy.",
		[input.request.object.metadata.name],
	)
}

selects_prop_pods if {
	input.request.kind.kind == "NetworkPolicy"
	input.request.object.spec.podSelector.matchLabels.app == "prop"
}

violates_prop_app_policy if {
	selects_prop_pods
	admitted := {labels.app | labels := input.request.object.spec.ingress[_].from[_].podSelector.matchLabels}
	not "frontend" in admitted
}

violates_prop_app_policy if {
	selects_prop_pods
	count(object.get(input.request.object.spec, "ingress", [])) != 1
}

violates_prop_app_policy if {
	selects_prop_pods
	some rule in input.request.object.spec.ingress
	count(object.get(rule, "from", [])) != 1
}
