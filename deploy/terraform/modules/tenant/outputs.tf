output "id" {
  description = "The tenant's id (known once the tenant is ACTIVE and, with a standby, STREAMING)."
  value       = cellplane_tenant.this.id
}

output "home_region" {
  description = "The tenant's home region."
  value       = cellplane_tenant.this.home_region
}

output "standby_region" {
  description = "The DR partner region (not where the standby is now: see data.cellplane_tenant for live placement)."
  value       = cellplane_tenant.this.standby_region
}

output "deletion_protection" {
  description = "Whether a destroy of the tenant is refused at plan time."
  value       = cellplane_tenant.this.deletion_protection
}

output "api_key_ids" {
  description = "Key name => key id (not secret)."
  value       = { for k, key in cellplane_api_key.this : k => key.key_id }
}

output "api_keys" {
  description = "Key name => secret (cpk_...), known only to the run that created the key; null after an import."
  value       = { for k, key in cellplane_api_key.this : k => key.secret }
  sensitive   = true
}
