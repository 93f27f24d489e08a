# A region, its cells and a health gate.
#
# The gate is a read of the region's live cells (data.cellplane_cells)
# after the cells are created or updated, with a postcondition that every
# ACTIVE cell of this module has a health in var.gate_health. The outputs
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

data "cellplane_cells" "gate" {
  region = cellplane_region.this.name

  depends_on = [cellplane_cell.this]

  lifecycle {
    postcondition {
      condition = alltrue([
        for id, c in var.cells : c.state != "ACTIVE" || contains(var.gate_health, try(one([for live in self.cells : live.health if live.id == id]), "MISSING"))
      ])
      error_message = format(
        "region %s is not ready: every ACTIVE cell must be one of %s, but %s",
        var.name, join("/", var.gate_health),
        jsonencode({ for live in self.cells : live.id => live.health if contains(keys(var.cells), live.id) }),
      )
    }
  }
}
