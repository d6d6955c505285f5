variable "project_id" {
  description = "Google Cloud project of every resource of the phase."
  type        = string
}

variable "region" {
  description = "Region of the phase's function."
  type        = string
}

variable "phase" {
  description = "One entry of var.pipeline.phases (pipeline.auto.tfvars.json): names of the function, topics, subscriptions, service accounts."
  type = object({
    number                   = number
    name                     = string
    function                 = string
    deployed_name            = string
    entry_point              = string
    topic                    = string
    dead_letter_topic        = string
    push_subscription        = string
    dead_letter_subscription = string
    function_account_id      = string
    push_account_id          = string
    max_instances            = number
    concurrency              = number
    cpu                      = string
    read_prefixes            = list(string)
    export_prefixes          = list(string)
  })

  validation {
    condition     = var.phase.concurrency == 1 || tonumber(var.phase.cpu) >= 1
    error_message = "A function serving more than one request at once (concurrency > 1) needs at least 1 vCPU."
  }

  validation {
    condition     = alltrue([for p in concat(var.phase.read_prefixes, var.phase.export_prefixes) : endswith(p, "/") && length(p) > 1])
    error_message = "Bucket prefixes must be non-empty folders ending with '/'."
  }
}

variable "labels" {
  description = "Labels of the phase's labelled resources."
  type        = map(string)
  default     = {}
}

variable "source_bucket" {
  description = "Bucket holding the function's source zip."
  type        = string
}

variable "source_object" {
  description = "Object name of the function's source zip (carries the zip's hash, so a change redeploys)."
  type        = string
}

variable "build_service_account" {
  description = "Service account (projects/<p>/serviceAccounts/<email>) Cloud Build uses to build the function."
  type        = string
}

variable "runtime" {
  description = "Cloud Functions runtime."
  type        = string
  default     = "python311"
}

variable "environment" {
  description = "Environment variables of the function (CASCADE_PROJECT, CASCADE_PIPELINE_FILE, CASCADE_PRODUCTION, ...)."
  type        = map(string)
}

variable "memory" {
  description = "Memory of the function (e.g. 512Mi)."
  type        = string
  default     = "512Mi"
}

variable "timeout_seconds" {
  description = "Timeout of one invocation; at most 540 s (below the push subscription's 600 s ack deadline)."
  type        = number

  validation {
    condition     = var.timeout_seconds <= 540
    error_message = "timeout_seconds must be at most 540."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries before a message goes to the dead-letter topic."
  type        = number
}

variable "min_retry_backoff_seconds" {
  description = "Minimum redelivery backoff of the push subscription."
  type        = number
}

variable "max_retry_backoff_seconds" {
  description = "Maximum redelivery backoff of the push subscription."
  type        = number
}

variable "dead_letter_retention" {
  description = "Retention (seconds) of the dead-letter subscription."
  type        = number
  default     = 604800
}

variable "pubsub_service_agent" {
  description = "E-mail of the project's Pub/Sub service agent (service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com)."
  type        = string
}

variable "write_datasets" {
  description = "Datasets the phase's processors MERGE into (dataEditor, dataset level)."
  type        = list(string)
}

variable "read_datasets" {
  description = "Datasets the phase's processors read upstream tables from (dataViewer, dataset level, unless also written)."
  type        = list(string)
  default     = []
}

variable "bucket" {
  description = "The raw/export bucket; the function gets access to var.phase.read_prefixes / export_prefixes of it only."
  type        = string
}
