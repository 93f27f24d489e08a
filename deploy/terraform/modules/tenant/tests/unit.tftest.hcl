# Plan-level tests with a mocked provider: no platform needed.
#   terraform test -filter=tests/unit.tftest.hcl

mock_provider "cellplane" {}

variables {
  id             = "acme"
  home_region    = "us-east"
  standby_region = "eu-west"
  api_keys = {
    agents = "agent fleet"
    ci     = "CI pipeline"
  }
}

run "tenant_pair_and_keys" {
  command = apply

  assert {
    condition     = cellplane_tenant.this.home_region == "us-east" && cellplane_tenant.this.standby_region == "eu-west"
    error_message = "the tenant's DR pair is not the one given"
  }
  assert {
    condition     = cellplane_tenant.this.deletion_protection == true
    error_message = "deletion_protection must default to true"
  }
  assert {
    condition     = length(cellplane_api_key.this) == 2 && alltrue([for k in cellplane_api_key.this : k.tenant == "acme"])
    error_message = "one key per api_keys entry, each of the tenant"
  }
  assert {
    condition     = cellplane_api_key.this["ci"].description == "CI pipeline"
    error_message = "the key's description is the map's value"
  }
  assert {
    condition     = toset(keys(output.api_key_ids)) == toset(["agents", "ci"])
    error_message = "api_key_ids is keyed by the key names"
  }
}

run "no_standby" {
  command = plan

  variables {
    standby_region = null
    api_keys       = {}
  }

  assert {
    condition     = cellplane_tenant.this.standby_region == null && length(cellplane_api_key.this) == 0
    error_message = "no standby and no keys"
  }
}

run "standby_in_home_region_is_refused" {
  command = plan

  variables {
    standby_region = "us-east"
  }

  expect_failures = [var.standby_region]
}

run "bad_id_is_refused" {
  command = plan

  variables {
    id = "not a valid id"
  }

  expect_failures = [var.id]
}

run "bad_placement_cell_is_refused" {
  command = plan

  variables {
    placement_cell = "no such/cell"
  }

  expect_failures = [var.placement_cell]
}

run "placement_cell_is_passed_on" {
  command = plan

  variables {
    placement_cell = "us-east-a"
  }

  assert {
    condition     = cellplane_tenant.this.placement_cell == "us-east-a"
    error_message = "placement_cell not passed to the tenant"
  }
}

run "negative_limits_are_refused" {
  command = plan

  variables {
    limits = { rate = -1 }
  }

  expect_failures = [var.limits]
}

run "bad_timeouts_are_refused" {
  command = plan

  variables {
    timeouts = { create = "ten minutes" }
  }

  expect_failures = [var.timeouts]
}

run "bad_key_name_is_refused" {
  command = plan

  variables {
    api_keys = { "has space" = "x" }
  }

  expect_failures = [var.api_keys]
}
