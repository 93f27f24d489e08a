# Plan-level tests with a mocked provider: no platform needed. The gate's
# read of the live cells is overridden per run.
#   terraform test -filter=tests/unit.tftest.hcl

mock_provider "cellplane" {}

variables {
  name        = "r1"
  description = "test region"
  cells = {
    r1-a = { expected_members = 3 }
    r1-b = { expected_members = 1, state = "CORDONED", wait_for_healthy = false, capacity = { max_tenants = 10 } }
  }
}

run "gate_open_when_active_cells_are_healthy" {
  command = apply

  # OpenTofu overrides whole resources, not instances: every cell reads so.
  override_data {
    target = data.cellplane_cell.gate
    values = { health = "HEALTHY" }
  }

  assert {
    condition     = output.name == "r1" && cellplane_region.this.description == "test region"
    error_message = "the region and its name output"
  }
  assert {
    condition     = output.cell_ids == tolist(["r1-a", "r1-b"]) && alltrue([for c in cellplane_cell.this : c.region == "r1"])
    error_message = "one cell per entry of var.cells, in the region"
  }
  assert {
    condition     = cellplane_cell.this["r1-a"].wait_for_healthy == true && cellplane_cell.this["r1-b"].wait_for_healthy == false
    error_message = "wait_for_healthy: the cell's, else the module's (true)"
  }
  assert {
    condition     = cellplane_cell.this["r1-a"].state == "ACTIVE" && cellplane_cell.this["r1-b"].state == "CORDONED"
    error_message = "state defaults to ACTIVE"
  }
  assert {
    condition     = cellplane_cell.this["r1-b"].capacity.max_tenants == 10 && cellplane_cell.this["r1-b"].capacity.max_bytes == 0
    error_message = "capacity passes through, 0 where omitted"
  }
  assert {
    condition     = output.gate == { r1-a = "HEALTHY", r1-b = "HEALTHY" }
    error_message = "the gate output is each cell's health"
  }
}

run "gate_closed_when_an_active_cell_is_unhealthy" {
  # After the first run the cells exist unchanged, so the gate is read
  # (and fails) while planning.
  command = plan

  override_data {
    target = data.cellplane_cell.gate
    values = { health = "UNAVAILABLE" }
  }

  expect_failures = [data.cellplane_cell.gate]
}

run "gate_closed_while_an_active_cell_has_not_started" {
  command = plan

  override_data {
    target = data.cellplane_cell.gate
    values = { health = "NOT_STARTED" }
  }

  expect_failures = [data.cellplane_cell.gate]
}

run "cordoned_cells_are_not_gated" {
  command = apply

  variables {
    cells = { r1-b = { expected_members = 1, state = "CORDONED", wait_for_healthy = false } }
  }

  override_data {
    target = data.cellplane_cell.gate
    values = { health = "NOT_STARTED" }
  }

  assert {
    condition     = output.name == "r1" && output.gate == { r1-b = "NOT_STARTED" }
    error_message = "a region of cordoned cells without nodes passes the gate"
  }
}

run "gate_accepts_what_gate_health_lists" {
  command = apply

  variables {
    gate_health = ["HEALTHY", "DEGRADED"]
  }

  override_data {
    target = data.cellplane_cell.gate
    values = { health = "DEGRADED" }
  }

  assert {
    condition     = output.gate == { r1-a = "DEGRADED", r1-b = "DEGRADED" }
    error_message = "DEGRADED cells pass a gate that accepts DEGRADED"
  }
}

run "even_members_are_refused" {
  command = plan

  variables {
    cells = { r1-a = { expected_members = 2 } }
  }

  expect_failures = [var.cells]
}

run "down_is_not_a_declarable_state" {
  command = plan

  variables {
    cells = { r1-a = { state = "DOWN" } }
  }

  expect_failures = [var.cells]
}

run "negative_capacity_is_refused" {
  command = plan

  variables {
    cells = { r1-a = { capacity = { max_bytes = -1 } } }
  }

  expect_failures = [var.cells]
}

run "a_region_needs_cells" {
  command = plan

  variables {
    cells = {}
  }

  expect_failures = [var.cells]
}

run "bad_names_are_refused" {
  command = plan

  variables {
    name  = "not valid"
    cells = { "bad cell" = {} }
  }

  expect_failures = [var.name, var.cells]
}

run "bad_gate_health_is_refused" {
  command = plan

  variables {
    gate_health = ["GREEN"]
  }

  expect_failures = [var.gate_health]
}

run "bad_timeouts_are_refused" {
  command = plan

  variables {
    cell_timeouts = { create = "soon" }
  }

  expect_failures = [var.cell_timeouts]
}
