import {
  to = cellplane_tenant.acme
  id = "acme"
}
