variable "name" {
  description = "The region's name ([A-Za-z0-9._-], at most 63 characters). Cannot change: the provider refuses a change at plan time."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,63}$", var.name))
    error_message = "name must be 1 to 63 characters of [A-Za-z0-9._-]."
  }
}

variable "description" {
  description = "Free text about the region, at most 256 bytes; changes in place."
  type        = string
  default     = ""
  nullable    = false

  validation {
    condition     = length(var.description) <= 256
    error_message = "description must be at most 256 bytes."
  }
}

variable "cells" {
  description = <<-EOT
    The region's cells, by cell id. For each: expected_members (1, 3, 5 or 7;
    cannot change), capacity (0: unbounded), state (ACTIVE, CORDONED or
    DRAINING; an operator's drain is never undone by an apply) and
    wait_for_healthy (null: the module's wait_for_healthy).
  EOT
  type = map(object({
    expected_members = optional(number, 3)
    capacity = optional(object({
      max_tenants = optional(number, 0)
      max_bytes   = optional(number, 0)
    }))
    state            = optional(string, "ACTIVE")
    wait_for_healthy = optional(bool)
  }))
  nullable = false

  validation {
    condition     = length(var.cells) > 0
    error_message = "a region needs at least one cell."
  }
  validation {
    condition     = alltrue([for id, c in var.cells : can(regex("^[A-Za-z0-9._-]{1,63}$", id))])
    error_message = "cell ids must be 1 to 63 characters of [A-Za-z0-9._-]."
  }
  validation {
    condition     = alltrue([for c in var.cells : contains([1, 3, 5, 7], c.expected_members)])
    error_message = "expected_members must be 1, 3, 5 or 7."
  }
  validation {
    condition     = alltrue([for c in var.cells : contains(["ACTIVE", "CORDONED", "DRAINING"], c.state)])
    error_message = "state must be ACTIVE, CORDONED or DRAINING."
  }
  validation {
    condition = alltrue([
      for c in var.cells : c.capacity == null ? true : (c.capacity.max_tenants >= 0 && c.capacity.max_bytes >= 0)
    ])
    error_message = "capacity must not be negative (0 means unbounded)."
  }
}

variable "wait_for_healthy" {
  description = "Whether creating a cell blocks until its members are HEALTHY (the default for every cell of var.cells). Set false to register cell records before their nodes exist."
  type        = bool
  default     = true
  nullable    = false
}

variable "gate_health" {
  description = "The health every ACTIVE cell must have for the gate to open: outputs `name` and `gate` are known only then, so resources that use them (tenants homed here) wait."
  type        = list(string)
  default     = ["HEALTHY"]
  nullable    = false

  validation {
    condition     = length(var.gate_health) > 0 && alltrue([for h in var.gate_health : contains(["HEALTHY", "DEGRADED", "UNAVAILABLE", "NOT_STARTED"], h)])
    error_message = "gate_health must list some of HEALTHY, DEGRADED, UNAVAILABLE and NOT_STARTED."
  }
}

variable "cell_timeouts" {
  description = "How long a cell's create (waiting for health), update (a drain) and delete may take, as Go durations."
  type = object({
    create = optional(string)
    update = optional(string)
    delete = optional(string)
  })
  default  = {}
  nullable = false

  validation {
    condition = alltrue([
      for v in values(var.cell_timeouts) : v == null ? true : can(regex("^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$", v))
    ])
    error_message = "cell_timeouts must be Go durations such as \"90s\" or \"20m\"."
  }
}
