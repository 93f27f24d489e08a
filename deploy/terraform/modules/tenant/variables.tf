variable "id" {
  description = "The tenant's id ([A-Za-z0-9._-], at most 63 characters). Cannot change: the provider refuses a change at plan time."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,63}$", var.id))
    error_message = "id must be 1 to 63 characters of [A-Za-z0-9._-]."
  }
}

variable "home_region" {
  description = "The region the tenant is created in. Pass a region module's `name` output so that the tenant waits for that region's health gate."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,63}$", var.home_region))
    error_message = "home_region must be 1 to 63 characters of [A-Za-z0-9._-]."
  }
}

variable "standby_region" {
  description = "The DR region of the pair {home_region, standby_region}; null for no standby. A switchover to it (with cellctl) is not drift: the next plan is empty."
  type        = string
  default     = null

  validation {
    condition     = var.standby_region == null ? true : can(regex("^[A-Za-z0-9._-]{1,63}$", var.standby_region))
    error_message = "standby_region must be null or 1 to 63 characters of [A-Za-z0-9._-]."
  }
  validation {
    condition     = var.standby_region != var.home_region
    error_message = "standby_region must differ from home_region: a standby in the same region does not survive the region's loss."
  }
}

variable "placement_cell" {
  description = "The cell to place the tenant on; null lets placement choose. A change is a live move (blocks until DONE within timeouts.update). Never read back: a move, drain or failover outside Terraform is not drift."
  type        = string
  default     = null

  validation {
    condition     = var.placement_cell == null ? true : can(regex("^[A-Za-z0-9._-]{1,63}$", var.placement_cell))
    error_message = "placement_cell must be null or 1 to 63 characters of [A-Za-z0-9._-]."
  }
}

variable "limits" {
  description = "Rate and size limits; null or an omitted field keeps the server's default. A max_bytes change returns once the tenant's cell enforces it."
  type = object({
    rate        = optional(number)
    burst       = optional(number)
    max_bytes   = optional(number)
    bytes_rate  = optional(number)
    bytes_burst = optional(number)
  })
  default = null

  validation {
    condition = alltrue([
      for v in try(values(var.limits), []) : try(v >= 0, v == null)
    ])
    error_message = "limits must not be negative."
  }
}

variable "deletion_protection" {
  description = "While true (the default) a destroy of the tenant is refused at plan time, before its keys are revoked. Set false and apply before destroying."
  type        = bool
  default     = true
  nullable    = false
}

variable "api_keys" {
  description = "The tenant's API keys: a map from a stable name to the key's description. Renaming a key revokes it and creates a new one."
  type        = map(string)
  default     = {}
  nullable    = false

  validation {
    condition     = alltrue([for k, d in var.api_keys : can(regex("^[A-Za-z0-9._-]{1,63}$", k)) && length(d) <= 256])
    error_message = "api_keys names must be 1 to 63 characters of [A-Za-z0-9._-] and descriptions at most 256 bytes."
  }
}

variable "timeouts" {
  description = "How long create (ACTIVE and the standby STREAMING), update and delete (the data gone) may take, as Go durations (\"10m\")."
  type = object({
    create = optional(string)
    update = optional(string)
    delete = optional(string)
  })
  default  = {}
  nullable = false

  validation {
    condition = alltrue([
      for v in values(var.timeouts) : v == null ? true : can(regex("^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$", v))
    ])
    error_message = "timeouts must be Go durations such as \"90s\" or \"10m\"."
  }
}
