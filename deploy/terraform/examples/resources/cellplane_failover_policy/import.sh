# The policy is a singleton, imported as "default".
terraform import cellplane_failover_policy.this default
