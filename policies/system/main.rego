# The admission webhook's answer. OPA serves this as its default decision (POST / with an
# AdmissionReview): every message of data.kubernetes.admission.deny refuses the request, joined into
# the response's status message; no message allows it. The request's uid is copied, as
# admission.k8s.io/v1 requires.
package system

import rego.v1

import data.kubernetes.admission

main := {
	"apiVersion": "admission.k8s.io/v1",
	"kind": "AdmissionReview",
	"response": response,
}

# An empty set when no deny rule is loaded at all, so the webhook still answers (and allows).
messages := {msg | some msg in admission.deny}

default uid := ""

uid := input.request.uid

response := {"uid": uid, "allowed": true} if count(messages) == 0

# `reason` as well as `message`: kubectl then shows the messages first, as
# "Error from server (<messages>): … denied the request: <messages>".
response := {
	"uid": uid,
	"allowed": false,
	"status": {"code": 403, "reason": concat(", ", sort(messages)), "message": concat(", ", sort(messages))},
} if count(messages) > 0
