# A tenant, its DR pair and its API keys.
#
# The tenant's plan-time safety rules live in the provider: id and
# home_region cannot change (an error, never a replace), a protected tenant
# cannot be destroyed, and a switchover or an emergency promotion is not
# drift. This module adds input validation and a stable shape for keys.

resource "cellplane_tenant" "this" {
  id                  = var.id
  home_region         = var.home_region
  standby_region      = var.standby_region
  placement_cell      = var.placement_cell
  limits              = var.limits
  deletion_protection = var.deletion_protection
  timeouts            = var.timeouts
}

resource "cellplane_api_key" "this" {
  for_each = var.api_keys

  tenant      = cellplane_tenant.this.id
  description = each.value

  lifecycle {
    # A rotated key (a new name) exists before the old one is revoked.
    create_before_destroy = true
  }
}
