# A region, its cells and a health gate.
#
# The gate is a read of each cell's live status (data.cellplane_cell) after
# the cell is created or updated, with a postcondition that every ACTIVE
# cell has a health in var.gate_health (CORDONED and DRAINING cells take no
# new tenants and are not gated). The outputs
# `name` and `gate` depend on it, so whatever uses them (tenants homed in
# the region, the next wave) is planned and applied only behind an open
# gate, and a failed gate stops the apply before them.

resource "cellplane_region" "this" {
  name        = var.name
  description = var.description
}

resource "cellplane_cell" "this" {
  for_each = var.cells

  id               = each.key
  region           = cellplane_region.this.name
  expected_members = each.value.expected_members
  capacity         = each.value.capacity
  state            = each.value.state
  wait_for_healthy = coalesce(each.value.wait_for_healthy, var.wait_for_healthy)
  timeouts         = var.cell_timeouts
}

data "cellplane_cell" "gate" {
  for_each = cellplane_cell.this

  # Refers to the managed cell, so it is read after the cell is created or
  # updated (at apply time when the cell changes, at plan time otherwise).
  id = each.value.id

  lifecycle {
    postcondition {
      condition     = var.cells[each.key].state != "ACTIVE" || contains(var.gate_health, self.health)
      error_message = "cell ${each.key} of region ${var.name} is ${self.health} (state ${self.state}); the gate opens when every ACTIVE cell is one of ${join(", ", var.gate_health)}. Later waves and the region's tenants wait."
    }
  }
}
