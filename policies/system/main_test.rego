package system_test

import rego.v1

import data.system

review(uid) := {"request": {"uid": uid, "kind": {"kind": "Pod"}}}

test_allows_without_deny_messages if {
	response := system.main.response with input as review("u1")
		with data.kubernetes.admission.deny as set()
	response == {"uid": "u1", "allowed": true}
}

test_refuses_with_the_messages_joined_in_status if {
	response := system.main.response with input as review("u2")
		with data.kubernetes.admission.deny as {"b went wrong", "a went wrong"}
	response.uid == "u2"
	response.allowed == false
	response.status.message == "a went wrong, b went wrong"
	response.status.reason == response.status.message
	response.status.code == 403
}

test_is_an_admission_review_v1 if {
	main := system.main with input as review("u3")
	main.apiVersion == "admission.k8s.io/v1"
	main.kind == "AdmissionReview"
}
