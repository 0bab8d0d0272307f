package kubernetes.admission_test

import rego.v1

import data.kubernetes.admission

pod(labels) := {"request": {"kind": {"kind": "Pod"}, "object": {"metadata": {"name": "prop-1", "labels": labels}}}}

np(name, app, ingress) := {"request": {
	"kind": {"kind": "NetworkPolicy"},
	"object": {"metadata": {"name": name}, "spec": {"podSelector": {"matchLabels": {"app": app}}, "ingress": ingress}},
}}

frontend_only := [{"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}]}]

policies(app) := {"default": {"p": {"spec": {"podSelector": {"matchLabels": {"app": app}}}}}}

test_prop_pod_without_network_policy_is_denied if {
	msgs := admission.deny with input as pod({"app": "prop"}) with data.kubernetes.networkpolicies as {}
	msgs == {"The Pod: prop-1 could not be created because it is missing an associated Network Security Policy."}
}

test_prop_pod_with_only_a_backend_policy_is_denied if {
	count(admission.deny) == 1 with input as pod({"app": "prop"}) with data.kubernetes.networkpolicies as policies("backend")
}

test_prop_pod_with_a_prop_policy_is_allowed if {
	count(admission.deny) == 0 with input as pod({"app": "prop"}) with data.kubernetes.networkpolicies as policies("prop")
}

test_other_pods_are_not_concerned if {
	count(admission.deny) == 0 with input as pod({"app": "web"}) with data.kubernetes.networkpolicies as {}
}

test_prop_policy_admitting_only_frontend_is_allowed if {
	count(admission.deny) == 0 with input as np("app-inbound-policy", "prop", frontend_only)
}

test_risky_prop_policy_is_denied if {
	risky := [{"from": [{"podSelector": {"matchLabels": {"tier": "test"}}}]}]
	msgs := admission.deny with input as np("risky-policy", "prop", risky)
	msgs == {"The Network Policy: risky-policy could not be created because it violates the proprietary app security policy."}
}

test_prop_policy_with_two_ingress_rules_is_denied if {
	two := array.concat(frontend_only, frontend_only)
	count(admission.deny) == 1 with input as np("two", "prop", two)
}

test_prop_policy_with_two_peers_is_denied if {
	peers := [{"from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}, {"podSelector": {"matchLabels": {"app": "x"}}}]}]
	count(admission.deny) == 1 with input as np("peers", "prop", peers)
}

test_unrelated_network_policies_are_not_concerned if {
	count(admission.deny) == 0 with input as np("other", "backend", [])
}
