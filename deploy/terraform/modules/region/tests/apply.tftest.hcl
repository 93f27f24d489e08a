# Applies the module against a real platform (e.g. `cellplane dev`), with
# the provider configured from the environment (CELLPLANE_CONFIG or
# CELLPLANE_CONTROLPLANE). It creates region tfmod-region with one cordoned
# 1-member cell record and no nodes (a cordoned cell is not gated and takes
# no tenants), changes it in place, and terraform test destroys both.
#   CELLPLANE_CONFIG=$PWD/.cellplane-dev/client.yaml terraform test -filter=tests/apply.tftest.hcl

variables {
  name        = "tfmod-region"
  description = "terraform test"
  cells = {
    tfmod-region-a = { expected_members = 1, state = "CORDONED", wait_for_healthy = false }
  }
}

run "create_region_and_cordoned_cell" {
  command = apply

  assert {
    condition     = output.name == "tfmod-region" && cellplane_region.this.create_time != ""
    error_message = "the region was not created"
  }
  assert {
    condition     = cellplane_cell.this["tfmod-region-a"].state == "CORDONED" && cellplane_cell.this["tfmod-region-a"].expected_members == 1
    error_message = "the cell was not created cordoned with one member"
  }
  assert {
    condition     = output.gate == { tfmod-region-a = "NOT_STARTED" }
    error_message = "the gate saw the cell record without nodes"
  }
}

run "update_in_place" {
  command = apply

  variables {
    description = "terraform test, changed"
    cells = {
      tfmod-region-a = { expected_members = 1, state = "CORDONED", wait_for_healthy = false, capacity = { max_tenants = 7 } }
    }
  }

  assert {
    condition     = cellplane_region.this.description == "terraform test, changed"
    error_message = "the description did not change in place"
  }
  assert {
    condition     = cellplane_cell.this["tfmod-region-a"].capacity.max_tenants == 7
    error_message = "the capacity did not change in place"
  }
}
