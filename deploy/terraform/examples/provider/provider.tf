terraform {
  required_providers {
    cellplane = {
      source = "cellplane/cellplane"
    }
  }
}

# Every argument is optional and resolves exactly like cellctl's:
# endpoint > CELLPLANE_CONTROLPLANE > the client configuration file's
# controlplane (config_file > CELLPLANE_CONFIG) > 127.0.0.1:7000.
provider "cellplane" {
  endpoint    = "cp.example.internal:7000"
  config_file = "/etc/cellplane/client.yaml" # controlplane, ca, cert, key

  # TLS material; replaces the file's as a whole. An operator certificate
  # of role admin is needed to change anything.
  tls_ca_file   = "certs/ca.crt"
  tls_cert_file = "certs/operator.alice.crt"
  tls_key_file  = "certs/operator.alice.key"

  call_timeout              = "10s" # each short call
  max_concurrent_operations = 4     # long operations at once, whatever -parallelism
}
