# An API key is imported as <tenant>/<key id>; its secret is then unknown (null).
terraform import cellplane_api_key.agents acme/0123456789abcdef
