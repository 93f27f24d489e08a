# `cellplane dev` creates its regions and cells itself (<region>-a, -b, ...).
# These import blocks adopt them into the modules instead of creating them.
# An import of an object already in the state is a no-op, so they stay.
#
# The failover policy needs no import block: creating cellplane_failover_policy
# adopts the platform's policy (stored, or the leader's flag defaults) and
# overwrites it; `terraform import cellplane_failover_policy.this default`
# adopts a stored one into an existing state.

locals {
  adopt_cells = var.adopt_existing ? merge([
    for r, region in local.enabled : { for id, _ in region.cells : id => r }
  ]...) : {}
}

import {
  for_each = var.adopt_existing ? local.enabled : {}
  to       = module.region[each.key].cellplane_region.this
  id       = each.key
}

import {
  for_each = local.adopt_cells
  to       = module.region[each.value].cellplane_cell.this[each.key]
  id       = each.key
}
