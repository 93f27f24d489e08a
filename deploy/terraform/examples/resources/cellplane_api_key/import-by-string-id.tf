import {
  to = cellplane_api_key.agents
  id = "acme/0123456789abcdef"
}
