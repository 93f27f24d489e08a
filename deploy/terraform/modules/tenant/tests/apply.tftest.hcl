# Applies the module against a real platform (regions us-east and eu-west,
# e.g. `cellplane dev`), with the provider configured from the environment
# (CELLPLANE_CONFIG or CELLPLANE_CONTROLPLANE). terraform test destroys what
# it created at the end, so the tenant is created unprotected.
#   CELLPLANE_CONFIG=$PWD/.cellplane-dev/client.yaml terraform test -filter=tests/apply.tftest.hcl

variables {
  id                  = "tfmod-tenant"
  home_region         = "us-east"
  standby_region      = "eu-west"
  deletion_protection = false
  api_keys = {
    ci = "terraform test"
  }
  timeouts = {
    create = "3m"
    delete = "3m"
  }
}

run "create_with_standby_and_key" {
  command = apply

  assert {
    condition     = cellplane_tenant.this.standby_region == "eu-west" && cellplane_tenant.this.create_time != ""
    error_message = "the tenant was not created with its standby"
  }
  assert {
    condition     = startswith(nonsensitive(output.api_keys["ci"]), "cpk_${output.api_key_ids["ci"]}_")
    error_message = "the key's secret is cpk_<key id>_<random>"
  }
}

run "rotate_key" {
  command = apply

  variables {
    api_keys = {
      ci-2 = "terraform test, rotated"
    }
  }

  assert {
    condition     = toset(keys(output.api_key_ids)) == toset(["ci-2"]) && cellplane_api_key.this["ci-2"].description == "terraform test, rotated"
    error_message = "the renamed key replaced the old one"
  }
  assert {
    condition     = startswith(nonsensitive(output.api_keys["ci-2"]), "cpk_${output.api_key_ids["ci-2"]}_")
    error_message = "the new key has its secret"
  }
}
