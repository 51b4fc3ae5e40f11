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

# true when the rule's match block selects this request; an absent key
# selects everything.
applies(rule) if {
	# The loader writes every match key (empty: any), so no lookups with
	# defaults here: this runs once per rule per decision.
	_actions_match(rule.match.actions)
	_projects_match(rule.match.projects)
	_tags_match(rule.match.tags)
	_pairs_match(rule.match.metadata, object.get(input, ["server", "metadata"], {}))
	_pairs_match(rule.match.image_properties, object.get(input, ["server", "image", "properties"], {}))
	_pairs_match(rule.match.flavor_extra_specs, object.get(input, ["server", "flavor", "extra_specs"], {}))
}

_actions_match(actions) if count(actions) == 0

_actions_match(actions) if input.action in actions

_projects_match(projects) if count(projects) == 0

_projects_match(projects) if input.server.project_id in projects

_tags_match(tags) if count(tags) == 0

_tags_match(tags) if {
	some tag in tags
	tag in object.get(input, ["server", "tags"], [])
}

# Values are strings on both sides (the loader and the input builder
# write them so).
_pairs_match(wanted, have) if {
	every key, value in wanted {
		object.get(have, key, null) == value
	}
}

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
