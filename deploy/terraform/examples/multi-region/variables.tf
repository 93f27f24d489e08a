variable "controlplane" {
  description = "The control plane's address; null: CELLPLANE_CONTROLPLANE, else the client configuration file's, else 127.0.0.1:7000."
  type        = string
  default     = null
}

variable "client_config" {
  description = "The client configuration file (address, CA, operator certificate); null: CELLPLANE_CONFIG."
  type        = string
  default     = null
}

variable "regions" {
  description = "Every region the platform may have, with its cells. The defaults are what `cellplane dev --regions us-east,eu-west,ap-south --cells-per-region 1 --nodes-per-cell 1` runs."
  type = map(object({
    description = optional(string, "")
    cells = map(object({
      expected_members = optional(number, 3)
      capacity = optional(object({
        max_tenants = optional(number, 0)
        max_bytes   = optional(number, 0)
      }))
      state = optional(string, "ACTIVE")
    }))
  }))
  default = {
    us-east  = { description = "wave 1", cells = { us-east-a = { expected_members = 1 } } }
    eu-west  = { description = "wave 2", cells = { eu-west-a = { expected_members = 1 } } }
    ap-south = { description = "wave 3", cells = { ap-south-a = { expected_members = 1 } } }
  }
  nullable = false
}

variable "enabled_regions" {
  description = "The regions rolled out so far, in wave order. Grow it one region per apply: each region's health gate must open before the tenants that use it are created."
  type        = list(string)
  default     = ["us-east"]
  nullable    = false

  validation {
    condition     = alltrue([for r in var.enabled_regions : contains(keys(var.regions), r)])
    error_message = "every enabled region must be declared in var.regions."
  }
  validation {
    condition     = length(distinct(var.enabled_regions)) == length(var.enabled_regions)
    error_message = "enabled_regions must not repeat a region."
  }
}

variable "dr_pairs" {
  description = "region => the region its tenants keep their standby in (their DR partner)."
  type        = map(string)
  default = {
    us-east  = "eu-west"
    eu-west  = "us-east"
    ap-south = "eu-west"
  }
  nullable = false

  validation {
    condition     = alltrue([for r, dr in var.dr_pairs : r != dr && contains(keys(var.regions), r) && contains(keys(var.regions), dr)])
    error_message = "each DR partner must be another region declared in var.regions."
  }
}

variable "tenants" {
  description = "Tenants by id: home_region, whether they keep a standby in the home region's DR partner, API keys (name => description), limits, and deletion_protection (null: var.deletion_protection). A tenant is created once its home region and, with a standby, its DR region are enabled."
  type = map(object({
    home_region         = string
    standby             = optional(bool, true)
    api_keys            = optional(map(string), {})
    deletion_protection = optional(bool)
    limits = optional(object({
      rate        = optional(number)
      burst       = optional(number)
      max_bytes   = optional(number)
      bytes_rate  = optional(number)
      bytes_burst = optional(number)
    }))
  }))
  default = {
    acme = {
      home_region = "us-east"
      api_keys    = { agents = "acme's agent fleet" }
    }
    globex = {
      home_region = "eu-west"
      api_keys    = { agents = "globex's agent fleet" }
    }
    initech = {
      home_region = "ap-south"
    }
    scratch = {
      home_region = "us-east"
      standby     = false
    }
  }
  nullable = false

  validation {
    condition     = alltrue([for t in var.tenants : contains(keys(var.regions), t.home_region)])
    error_message = "every tenant's home_region must be declared in var.regions."
  }
  validation {
    condition     = alltrue([for t in var.tenants : !t.standby || contains(keys(var.dr_pairs), t.home_region)])
    error_message = "a tenant with a standby needs a DR partner for its home region in var.dr_pairs."
  }
}

variable "deletion_protection" {
  description = "The default deletion_protection of the tenants. Turn it off (-var deletion_protection=false) and apply before a destroy."
  type        = bool
  default     = true
  nullable    = false
}

variable "adopt_existing" {
  description = "Adopt the regions and cells that already exist (cellplane dev creates its own) through import blocks, instead of creating them."
  type        = bool
  default     = true
  nullable    = false
}

variable "failover_policy" {
  description = "The platform's automatic promotion policy (adopted: import id \"default\"); null fields take the control plane leader's defaults, null regions means all. Off by default: an emergency promotion can lose acknowledged writes."
  type = object({
    enabled        = optional(bool, false)
    unhealthy_for  = optional(string)
    regions        = optional(set(string))
    max_concurrent = optional(number)
  })
  default  = {}
  nullable = false
}
