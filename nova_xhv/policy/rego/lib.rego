# Messages are built with concat, never sprintf: rego-cpp 1.5 quotes the
# result of a built-in passed to sprintf and emits invalid JSON.
#
# Helpers every XHV template uses: which servers and actions a rule
# instance applies to (its "match" block), and the move actions.
package xhv.lib

import rego.v1

move_actions := {"move", "resize", "evacuate", "live_migrate"}

placement_actions := {"boot", "unshelve", "audit"} | move_actions

is_move if input.action in move_actions

crosses_families if {
	input.source.family
	input.destination.family
	input.source.family != input.destination.family
}

# {template name: [ids of its rule instances whose match block selects
# this request]}; a template iterates only these (rego-cpp 1.5 spends ~10
# us a binding, so iterating every rule per destination is what costs).
# Deciding one request for many destinations (the scheduler's host
# classes, nova-api's families), the engine asks for applicable_rules once
# and hands them back, grouped so, as input.xhv_applicable_rules: the
# match block reads nothing of the source or the destination, so one
# answer holds for every destination.
applicable := input.xhv_applicable_rules if is_object(input.xhv_applicable_rules)

applicable := {name: [rule.id | some rule in rules; rule.id in applicable_rules] |
	some name, rules in data.xhv.rules
} if not is_object(input.xhv_applicable_rules)

# The ids of the rule instances whose match block selects this request:
# all but those a non-empty match key excludes (an empty key selects
# everything).  Reads only action, server and caller (see applicable).
# data.xhv.match_index.<key> holds, for each rule whose match has that key
# non-empty, {rule id: wanted value}: so each check below visits only the
# rules that use its key.  Checks stand in rule bodies, not function
# bodies: rego-cpp 1.5 stops a rule body at its first failing statement
# but evaluates every call in a function body.
applicable_rules contains id if {
	some id in data.xhv.rule_ids
	not _excluded[id]
}

_excluded contains id if {
	some id, actions in data.xhv.match_index.actions
	not input.action in actions
}

_excluded contains id if {
	some id, projects in data.xhv.match_index.projects
	not input.server.project_id in projects
}

_excluded contains id if {
	some id, tags in data.xhv.match_index.tags
	have := object.get(input, ["server", "tags"], [])
	count({tag | some tag in tags; tag in have}) == 0
}

_excluded contains id if {
	some id, wanted in data.xhv.match_index.metadata
	not _pairs_hold(wanted, object.get(input, ["server", "metadata"], {}))
}

_excluded contains id if {
	some id, wanted in data.xhv.match_index.image_properties
	not _pairs_hold(wanted, object.get(input, ["server", "image", "properties"], {}))
}

_excluded contains id if {
	some id, wanted in data.xhv.match_index.flavor_extra_specs
	not _pairs_hold(wanted, object.get(input, ["server", "flavor", "extra_specs"], {}))
}

# Values are strings on both sides (the loader and nova_xhv.policy.inputs
# write them so); anything but a mapping holds no pairs.
_pairs_hold(wanted, have) if {
	every key, value in wanted {
		object.get(have, key, null) == value
	}
}

# For operator modules: does this rule instance select the request?
applies(rule) if rule.id in applicable[rule.template]

# One edge of a move matrix: {"from": family|"*", "to": family|"*",
# "roles": [...] (empty or absent: any caller)}.
edge_allows(edge) if {
	_family_matches(object.get(edge, "from", "*"), input.source.family)
	_family_matches(object.get(edge, "to", "*"), input.destination.family)
	_roles_allow(object.get(edge, "roles", []))
}

_family_matches("*", _) := true

_family_matches(wanted, family) if {
	wanted != "*"
	wanted == family
}

_roles_allow(roles) if count(roles) == 0

_roles_allow(roles) if {
	some role in roles
	role in object.get(input, ["caller", "roles"], [])
}

# "kvm -> vmware" for messages.
edge_text := concat("", [text(input.source.family), " -> ", text(input.destination.family)])

host_text := text(object.get(input, ["destination", "host"], null))

# A value for a message: a string as it is, anything else (null, an
# absent key) as "?" -- concat over a non-string is undefined, and an
# undefined message would silently drop its violation.
text(x) := x if is_string(x)

text(x) := "?" if not is_string(x)

roles_text := concat(", ", sort(object.get(input, ["caller", "roles"], [])))
