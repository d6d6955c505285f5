# Cascade production deployment: shared resources of one pipeline plus one `phase` module per phase.
#
# Everything per-phase comes from var.pipeline (pipeline.auto.tfvars.json, generated from the
# pipeline definition by `python -m cascade.deploy.tfvars --write`): adding a phase to the YAML and
# regenerating that file is the whole change; nothing here names a phase.

locals {
  services = toset([
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ])

  phases = var.pipeline.phases
  # Phases started by their own Cloud Scheduler job (e.g. 2 raw daily, 5 predictions).
  scheduled_phases = { for k, p in local.phases : k => p if p.schedule != null }
  # Phases whose completion triggers another phase: the edge grants publisher on the next topic.
  cascading_phases = { for k, p in local.phases : k => p if p.next != null }

  raw_bucket_name    = replace(var.pipeline.raw_bucket, var.pipeline.project_placeholder, var.project_id)
  source_bucket_name = replace(var.pipeline.source_bucket, var.pipeline.project_placeholder, var.project_id)

  # The Pub/Sub service agent: publishes dead letters and acks the push subscription's originals.
  pubsub_service_agent = "service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  labels = merge(var.labels, {
    app      = "cascade"
    pipeline = replace(var.pipeline.name, "_", "-")
  })

  # ---------------------------------------------------------------- function source packaging
  source_root = startswith(var.source_root, "/") ? var.source_root : "${path.module}/${var.source_root}"
  # The library's runtime files (the import closure of the function entry points, derived by
  # cascade.deploy.tfvars - the CLI, emulators, backfills, UI and fault injection stay out) and the
  # pipeline definition with its own Python modules (python: processors) go into every function's zip.
  library_files = setunion(toset(var.pipeline.runtime_files), [var.pipeline.definition_file],
  toset(var.pipeline.definition_modules))
  # Runtime dependencies only (pins taken from the repository's requirements.txt by cascade.deploy.tfvars).
  function_requirements = "${join("\n", var.pipeline.runtime_requirements)}\n"

  sweeper_main    = "${local.source_root}/${var.pipeline.sweeper.source_dir}/main.py"
  sweeper_enabled = var.enable_sweeper && fileexists(local.sweeper_main)

  # CASCADE_PIPELINE_FILE is relative to the function's working directory (the unpacked zip).
  function_environment = merge({
    CASCADE_PROJECT       = var.project_id
    CASCADE_PIPELINE_FILE = var.pipeline.definition_file
    CASCADE_PRODUCTION    = "1"
    CASCADE_MAX_ATTEMPTS  = tostring(var.max_run_attempts)
    LOG_EXECUTION_ID      = "true"
  }, var.pipeline.namespace == "" ? {} : { CASCADE_NAMESPACE = var.pipeline.namespace }, var.extra_environment)
}

data "google_project" "this" {
  project_id = var.project_id
}

# ------------------------------------------------------------------ APIs and service agents
resource "google_project_service" "apis" {
  for_each = var.enable_apis ? local.services : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# Makes sure the Pub/Sub service agent exists before it is granted anything.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"

  depends_on = [google_project_service.apis]
}

# ------------------------------------------------------------------ Firestore (completion tracking)
resource "google_firestore_database" "default" {
  count = var.manage_firestore_database ? 1 : 0

  project                           = var.project_id
  name                              = "(default)"
  location_id                       = var.firestore_location
  type                              = "FIRESTORE_NATIVE"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = "ABANDON"

  depends_on = [google_project_service.apis]
}

# ------------------------------------------------------------------ BigQuery
resource "google_bigquery_dataset" "this" {
  for_each = toset(var.pipeline.datasets)

  project     = var.project_id
  dataset_id  = each.value
  location    = var.bigquery_location
  description = "Cascade pipeline ${var.pipeline.name}: ${each.value} (managed by Terraform)."
  labels      = local.labels

  depends_on = [google_project_service.apis]
}

# A table holds history that cannot be recomputed from Terraform: it is never replaced by a plan.
# Adding a NULLABLE column applies in place; a change the provider can only make by replacing the
# table (a column dropped, renamed or retyped, another partitioning) is refused at plan time by
# prevent_destroy and must be migrated on purpose (docs/deploy.md, "Provider version and schema check").
resource "google_bigquery_table" "this" {
  for_each = var.pipeline.tables

  project             = var.project_id
  dataset_id          = google_bigquery_dataset.this[each.value.dataset].dataset_id
  table_id            = each.value.table
  description         = "Written by MERGE on its keys, one ${each.value.date_column} partition at a time."
  deletion_protection = true
  labels              = local.labels
  clustering          = length(each.value.clustering) > 0 ? each.value.clustering : null
  schema              = jsonencode(each.value.schema)

  time_partitioning {
    type  = "DAY"
    field = each.value.date_column
  }

  lifecycle {
    prevent_destroy = true
  }
}

# ------------------------------------------------------------------ Buckets
resource "google_storage_bucket" "source" {
  project                     = var.project_id
  name                        = local.source_bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = local.labels

  versioning {
    enabled = true
  }

  # Old function sources stay restorable for a while (rollback), then go.
  lifecycle_rule {
    condition {
      num_newer_versions = 10
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Raw scraped files read by the raw-load processors (gs://<project>-<raw_bucket>/...); also where
# export processors (publishing) write their files. Each function may touch only its own folders
# (module phase: read_prefixes / export_prefixes).
resource "google_storage_bucket" "raw" {
  project                     = var.project_id
  name                        = local.raw_bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = local.labels

  versioning {
    enabled = true
  }

  depends_on = [google_project_service.apis]
}

# Buckets an export declares of its own (export.bucket in the definition): created like the raw
# bucket; only the exporting phase's function may write there, and only under the export's folder.
resource "google_storage_bucket" "export" {
  for_each = toset([for e in values(var.pipeline.export_buckets) : replace(e.name, var.pipeline.project_placeholder, var.project_id)])

  project                     = var.project_id
  name                        = each.value
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = local.labels

  versioning {
    enabled = true
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "export_writer" {
  for_each = var.pipeline.export_buckets

  bucket = google_storage_bucket.export[replace(each.value.name, var.pipeline.project_placeholder, var.project_id)].name
  role   = "roles/storage.objectAdmin"
  member = module.phase[each.value.phase].service_account_member

  condition {
    title       = "export ${each.key}"
    description = "Processor ${each.key} publishes its exports under ${each.value.prefix} only."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.export[replace(each.value.name, var.pipeline.project_placeholder, var.project_id)].name}/objects/${each.value.prefix}\")"
  }
}

# ------------------------------------------------------------------ Function sources
# One zip per function: the function's main.py at the root, the shared library, the pipeline
# definition and requirements.txt. The object name carries the zip's hash, so any change of the
# library, the definition or the function creates a new object and redeploys the function.
data "archive_file" "phase" {
  for_each = local.phases

  type             = "zip"
  output_path      = "${path.module}/.build/${each.value.function}.zip"
  output_file_mode = "0644"

  source {
    filename = "main.py"
    content  = file("${local.source_root}/${each.value.source_dir}/main.py")
  }

  source {
    filename = "requirements.txt"
    content  = local.function_requirements
  }

  dynamic "source" {
    for_each = local.library_files
    content {
      filename = startswith(source.value, "shared/") ? "cascade/${trimprefix(source.value, "shared/")}" : source.value
      content  = file("${local.source_root}/${source.value}")
    }
  }
}

resource "google_storage_bucket_object" "phase_source" {
  for_each = local.phases

  bucket       = google_storage_bucket.source.name
  name         = "${each.value.function}/source-${data.archive_file.phase[each.key].output_md5}.zip"
  source       = data.archive_file.phase[each.key].output_path
  content_type = "application/zip"
}

# ------------------------------------------------------------------ Build identity
# Cloud Build builds the function images as this account (new projects' default compute account
# has no roles).
resource "google_service_account" "build" {
  project      = var.project_id
  account_id   = var.pipeline.build_account_id
  display_name = "Cascade ${var.pipeline.name} function builds"
}

resource "google_project_iam_member" "build" {
  for_each = toset(["roles/logging.logWriter", "roles/artifactregistry.writer"])

  project = var.project_id
  role    = each.value
  member  = google_service_account.build.member
}

resource "google_storage_bucket_iam_member" "build_source_reader" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# ------------------------------------------------------------------ Phases
module "phase" {
  source   = "./modules/phase"
  for_each = local.phases

  project_id = var.project_id
  region     = var.region
  phase      = each.value
  labels     = local.labels

  source_bucket         = google_storage_bucket.source.name
  source_object         = google_storage_bucket_object.phase_source[each.key].name
  build_service_account = google_service_account.build.id
  runtime               = var.python_runtime
  environment           = local.function_environment

  memory                    = var.function_memory
  timeout_seconds           = var.function_timeout_seconds
  max_delivery_attempts     = var.max_delivery_attempts
  min_retry_backoff_seconds = var.min_retry_backoff_seconds
  max_retry_backoff_seconds = var.max_retry_backoff_seconds
  dead_letter_retention     = var.dead_letter_retention_seconds

  pubsub_service_agent = local.pubsub_service_agent
  write_datasets       = [for d in each.value.writes_datasets : google_bigquery_dataset.this[d].dataset_id]
  read_datasets        = [for d in each.value.reads_datasets : google_bigquery_dataset.this[d].dataset_id]
  # Raw loads read their source folders, export processors write their export folder (each.value
  # read_prefixes / export_prefixes); other phases get nothing of the bucket.
  bucket = google_storage_bucket.raw.name

  depends_on = [
    google_project_service.apis,
    google_project_service_identity.pubsub,
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_source_reader,
    google_firestore_database.default,
    google_bigquery_table.this,
  ]
}

# A phase's function may publish only to the next phase's topic (its completion message). Granted
# here, not in the module, because it links two module instances.
resource "google_pubsub_topic_iam_member" "next_phase_publisher" {
  for_each = local.cascading_phases

  project = var.project_id
  topic   = module.phase[tostring(each.value.next)].topic_name
  role    = "roles/pubsub.publisher"
  member  = module.phase[each.key].service_account_member
}

# ------------------------------------------------------------------ Schedules
# A date-less trigger ({"pipeline", "phase"}): the function resolves the phase's default date
# (yesterday / today) in the pipeline's time zone.
resource "google_cloud_scheduler_job" "phase" {
  for_each = local.scheduled_phases

  project     = var.project_id
  region      = var.region
  name        = "${each.value.topic}-schedule"
  description = "Triggers phase ${each.value.number} (${each.value.name}) of ${var.pipeline.name} for its default date."
  schedule    = each.value.schedule
  time_zone   = var.pipeline.time_zone
  paused      = var.scheduler_paused

  retry_config {
    retry_count          = 3
    min_backoff_duration = "30s"
    max_backoff_duration = "600s"
  }

  pubsub_target {
    topic_name = module.phase[each.key].topic_id
    data       = base64encode(jsonencode({ pipeline = var.pipeline.name, phase = each.value.number }))
    attributes = {
      kind     = "trigger"
      pipeline = var.pipeline.name
      phase    = tostring(each.value.number)
    }
  }

  depends_on = [google_project_service.apis]
}

# ------------------------------------------------------------------ Sweeper
# Republishes trigger claims left unpublished (exactly one downstream trigger). Deployed once
# functions/sweeper/main.py exists; HTTP function (entry point `handle`) called by Cloud Scheduler
# with an OIDC token every 10 minutes.
data "archive_file" "sweeper" {
  count = local.sweeper_enabled ? 1 : 0

  type             = "zip"
  output_path      = "${path.module}/.build/${var.pipeline.sweeper.function}.zip"
  output_file_mode = "0644"

  source {
    filename = "main.py"
    content  = file(local.sweeper_main)
  }

  source {
    filename = "requirements.txt"
    content  = local.function_requirements
  }

  dynamic "source" {
    for_each = local.library_files
    content {
      filename = startswith(source.value, "shared/") ? "cascade/${trimprefix(source.value, "shared/")}" : source.value
      content  = file("${local.source_root}/${source.value}")
    }
  }
}

resource "google_storage_bucket_object" "sweeper_source" {
  count = local.sweeper_enabled ? 1 : 0

  bucket       = google_storage_bucket.source.name
  name         = "${var.pipeline.sweeper.function}/source-${data.archive_file.sweeper[0].output_md5}.zip"
  source       = data.archive_file.sweeper[0].output_path
  content_type = "application/zip"
}

resource "google_service_account" "sweeper" {
  count = local.sweeper_enabled ? 1 : 0

  project      = var.project_id
  account_id   = var.pipeline.sweeper.function_account_id
  display_name = "Cascade ${var.pipeline.name} sweeper function"
}

resource "google_service_account" "sweeper_invoker" {
  count = local.sweeper_enabled ? 1 : 0

  project      = var.project_id
  account_id   = var.pipeline.sweeper.invoker_account_id
  display_name = "Cascade ${var.pipeline.name} sweeper scheduler (OIDC invoker)"
}

resource "google_project_iam_member" "sweeper_datastore" {
  count = local.sweeper_enabled ? 1 : 0

  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.sweeper[0].member
}

resource "google_pubsub_topic_iam_member" "sweeper_publisher" {
  for_each = local.sweeper_enabled ? local.phases : {}

  project = var.project_id
  topic   = module.phase[each.key].topic_name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.sweeper[0].member
}

resource "google_cloudfunctions2_function" "sweeper" {
  count = local.sweeper_enabled ? 1 : 0

  project     = var.project_id
  location    = var.region
  name        = var.pipeline.sweeper.deployed_name
  description = "Cascade ${var.pipeline.name} sweeper: republishes unpublished trigger claims."
  labels      = local.labels

  build_config {
    runtime         = var.python_runtime
    entry_point     = var.pipeline.sweeper.entry_point
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.sweeper_source[0].name
      }
    }
  }

  service_config {
    min_instance_count               = 0
    max_instance_count               = 1
    max_instance_request_concurrency = 1
    available_memory                 = var.function_memory
    timeout_seconds                  = var.sweeper_timeout_seconds
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.sweeper[0].email
    environment_variables            = local.function_environment
  }

  depends_on = [
    google_project_iam_member.build,
    google_storage_bucket_iam_member.build_source_reader,
  ]
}

resource "google_cloud_run_v2_service_iam_member" "sweeper_invoker" {
  count = local.sweeper_enabled ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.sweeper[0].name
  role     = "roles/run.invoker"
  member   = google_service_account.sweeper_invoker[0].member
}

resource "google_cloud_scheduler_job" "sweeper" {
  count = local.sweeper_enabled ? 1 : 0

  project          = var.project_id
  region           = var.region
  name             = "${var.pipeline.sweeper.deployed_name}-schedule"
  description      = "Runs the ${var.pipeline.name} sweeper."
  schedule         = var.sweeper_schedule
  time_zone        = var.pipeline.time_zone
  paused           = var.scheduler_paused
  attempt_deadline = "${var.sweeper_timeout_seconds}s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.sweeper[0].service_config[0].uri
    body        = base64encode(jsonencode({ pipeline = var.pipeline.name }))
    headers = {
      "Content-Type" = "application/json"
    }

    oidc_token {
      service_account_email = google_service_account.sweeper_invoker[0].email
      audience              = google_cloudfunctions2_function.sweeper[0].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.sweeper_invoker]
}
