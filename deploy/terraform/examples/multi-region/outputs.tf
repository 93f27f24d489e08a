output "regions" {
  description = "The enabled regions and their cells."
  value       = { for r, m in module.region : r => m.cell_ids }
}

output "tenants" {
  description = "Each tenant's DR pair (not where it is served now: that is live state, in data.cellplane_tenant or `cellctl tenant get`)."
  value       = { for id, m in module.tenant : id => { home_region = m.home_region, standby_region = m.standby_region } }
}

output "api_keys" {
  description = "tenant => key name => secret, known to the apply that created the key."
  value       = { for id, m in module.tenant : id => m.api_keys }
  sensitive   = true
}
