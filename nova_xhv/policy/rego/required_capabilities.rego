# Template required_capabilities: what a destination must offer for the
# servers a rule matches to land there (capabilities its compute
# publishes: uefi, secure_boot, exchange_tls_verified, encrypted_disks,
# ...).  parameters: capabilities (list), families (optional: only
# destinations of these families are checked).
package xhv.templates.required_capabilities

import rego.v1

import data.xhv.lib

violation contains v if {
	input.action in lib.placement_actions
	input.destination
	some id in lib.applicable.required_capabilities
	rule := data.xhv.rule[id]
	_family_in_scope(object.get(rule.parameters, "families", []))
	have := {c | some c in object.get(input.destination, "capabilities", [])}
	missing := {c | some c in rule.parameters.capabilities} - have
	count(missing) > 0
	v := {"rule": rule.id, "enforcement": rule.enforcement, "msg": concat("", [
		"host ", lib.host_text, " (", lib.text(input.destination.family), ") lacks ", concat(", ", sort(missing)),
	])}
}

_family_in_scope(families) if count(families) == 0

_family_in_scope(families) if input.destination.family in families
