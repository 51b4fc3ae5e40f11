# Template pinned_image_boot (a default rule): a NEW boot of an image
# pinned with hypervisor_type lands only on its own family, unless the
# destination lists that type in [xhv] new_boot_families.
package xhv.templates.pinned_image_boot

import rego.v1

import data.xhv.lib

violation contains v if {
	input.action in {"boot", "unshelve"}
	pinned := input.server.image.pinned_family
	is_string(pinned)
	some id in lib.applicable.pinned_image_boot
	rule := data.xhv.rule[id]
	pinned
	input.destination.family
	pinned != input.destination.family
	not _listed(pinned)
	v := {"rule": rule.id, "enforcement": rule.enforcement, "msg": concat("", [
		"the image is pinned to ", lib.text(pinned), " (hypervisor_type ", lib.text(input.server.image.properties.hypervisor_type),
		"); host ", lib.host_text, " is ", lib.text(input.destination.family), " ([xhv] new_boot_families)",
	])}
}

_listed(pinned) if pinned in object.get(input.destination, "new_boot_families", [])

_listed(_) if {
	lower(input.server.image.properties.hypervisor_type) in object.get(input.destination, "new_boot_families", [])
}
