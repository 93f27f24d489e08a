data "cellplane_status" "now" {}

# A check block warns (it does not fail the apply) when a cell is unhealthy.
check "cells_healthy" {
  assert {
    condition     = alltrue([for c in data.cellplane_status.now.cells : c.health == "HEALTHY"])
    error_message = "some cells are not HEALTHY"
  }
}
