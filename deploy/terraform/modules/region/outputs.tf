output "name" {
  description = "The region's name, known only once the health gate is open: use it (not a literal) as a tenant's home_region or standby_region so the tenant waits for healthy cells."
  value       = cellplane_region.this.name
  depends_on  = [data.cellplane_cell.gate]
}

output "gate" {
  description = "The cells that passed the gate, id => health when it was checked. Depend on it to order anything after this region."
  value       = { for id, c in data.cellplane_cell.gate : id => c.health }
}

output "cell_ids" {
  description = "The ids of the region's cells that this module manages."
  value       = sort(keys(cellplane_cell.this))
}

output "cells" {
  description = "id => the cell's declared expected_members, capacity and state (not live health: see `gate` or data.cellplane_cell)."
  value = { for id, c in cellplane_cell.this : id => {
    expected_members = c.expected_members
    capacity         = c.capacity
    state            = c.state
  } }
}
