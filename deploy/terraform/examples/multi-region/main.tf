# A multi-region rollout in waves, against one global control plane.
#
#   wave 1: enabled_regions = ["us-east"]                         # region, its cells, the gate
#   wave 2: enabled_regions = ["us-east", "eu-west"]              # + acme (standby eu-west), globex
#   wave 3: enabled_regions = ["us-east", "eu-west", "ap-south"]  # + initech
#
# One apply per wave. A tenant is created only when both regions of its DR
# pair are enabled, and it refers to them through the region modules'
# `name` outputs, so it waits for their health gates.

locals {
  enabled = { for r in var.enabled_regions : r => var.regions[r] }

  tenants = {
    for id, t in var.tenants : id => merge(t, {
      standby_region = t.standby ? var.dr_pairs[t.home_region] : null
    })
    if contains(var.enabled_regions, t.home_region) && (!t.standby || contains(var.enabled_regions, try(var.dr_pairs[t.home_region], "")))
  }
}

module "region" {
  source   = "../../modules/region"
  for_each = local.enabled

  name        = each.key
  description = each.value.description
  cells       = each.value.cells
}

module "tenant" {
  source   = "../../modules/tenant"
  for_each = local.tenants

  id                  = each.key
  home_region         = module.region[each.value.home_region].name
  standby_region      = each.value.standby_region == null ? null : module.region[each.value.standby_region].name
  api_keys            = each.value.api_keys
  limits              = each.value.limits
  deletion_protection = coalesce(each.value.deletion_protection, var.deletion_protection)
}

resource "cellplane_failover_policy" "this" {
  enabled        = var.failover_policy.enabled
  unhealthy_for  = var.failover_policy.unhealthy_for
  regions        = var.failover_policy.regions
  max_concurrent = var.failover_policy.max_concurrent
}
