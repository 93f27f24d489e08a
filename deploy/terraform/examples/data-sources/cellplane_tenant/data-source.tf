# Where acme is served now: changes with every switchover, promotion and
# move (live state, so it lives in a data source, not in the resource).
data "cellplane_tenant" "acme" {
  id = "acme"
}

output "acme_served_from" {
  value = data.cellplane_tenant.acme.cell_region
}
