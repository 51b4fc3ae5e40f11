# Template project_placement: where the servers a rule matches may run.
# parameters: families, aggregates, availability_zones (each optional;
# a list given must contain the destination's value).
package xhv.templates.project_placement

import rego.v1

import data.xhv.lib

violation contains v if {
	input.action in lib.placement_actions
	input.destination
	some id in lib.applicable.project_placement
	rule := data.xhv.rule[id]
	some reason in _reasons(rule.parameters)
	v := {"rule": rule.id, "enforcement": rule.enforcement, "msg": reason}
}

_reasons(params) := {r |
	families := object.get(params, "families", [])
	count(families) > 0
	not input.destination.family in families
	r := concat("", [
		"project ", lib.text(input.server.project_id), " may run on ", concat(", ", families),
		" only, not on ", lib.text(input.destination.family), " (host ", lib.host_text, ")",
	])
} | {r |
	aggregates := object.get(params, "aggregates", [])
	count(aggregates) > 0
	names := {a.name | some a in object.get(input.destination, "aggregates", [])}
	count(names & {a | some a in aggregates}) == 0
	r := concat("", [
		"project ", lib.text(input.server.project_id), " may run in aggregates ", concat(", ", aggregates),
		" only; host ", lib.host_text, " is in: ", concat(", ", sort(names)),
	])
} | {r |
	zones := object.get(params, "availability_zones", [])
	count(zones) > 0
	not object.get(input.destination, "availability_zone", null) in zones
	r := concat("", [
		"project ", lib.text(input.server.project_id), " may run in availability zones ", concat(", ", zones),
		" only, not in ", lib.text(object.get(input.destination, "availability_zone", null)),
	])
}
