# A tenant is imported by its id.
terraform import cellplane_tenant.acme acme
