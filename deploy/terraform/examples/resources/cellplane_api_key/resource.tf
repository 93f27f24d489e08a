resource "cellplane_api_key" "agents" {
  tenant      = cellplane_tenant.acme.id
  description = "acme's agent fleet"

  lifecycle {
    # Rotate by replacing: the new key exists before the old is revoked.
    create_before_destroy = true
  }
}

# The secret (cpk_<key id>_<random>) is in the state: protect the state.
output "acme_agents_key" {
  value     = cellplane_api_key.agents.secret
  sensitive = true
}
