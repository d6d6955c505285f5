# One phase of a Cascade pipeline: trigger topic -> push subscription (OIDC) -> 2nd-gen function,
# with a dead-letter topic for messages that failed max_delivery_attempts times.
#
# The function has no event_trigger: Pub/Sub pushes straight to its URL, so the subscription's
# ack deadline, backoff and dead-lettering are ours (an Eventarc trigger would hide them).
# The grant to publish to the next phase's topic links two instances of this module and is made
# by the root module (google_pubsub_topic_iam_member.next_phase_publisher).

locals {
  pubsub_agent_member = "serviceAccount:${var.pubsub_service_agent}"
  # Datasets only read (upstream tables): viewer; the ones written: editor.
  read_only_datasets = setsubtract(toset(var.read_datasets), toset(var.write_datasets))
}

# ------------------------------------------------------------------ Topics
resource "google_pubsub_topic" "trigger" {
  project = var.project_id
  name    = var.phase.topic
  labels  = var.labels
}

resource "google_pubsub_topic" "dead_letter" {
  project = var.project_id
  name    = var.phase.dead_letter_topic
  labels  = var.labels
}

# Dead letters are kept here (pull) for inspection and replay; see docs/deploy.md.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = var.phase.dead_letter_subscription
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "${var.dead_letter_retention}s"
  retain_acked_messages      = false
  labels                     = var.labels

  expiration_policy {
    ttl = ""
  }
}

# ------------------------------------------------------------------ Identities
resource "google_service_account" "function" {
  project      = var.project_id
  account_id   = var.phase.function_account_id
  display_name = "Cascade phase ${var.phase.number} (${var.phase.name}) function"
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = var.phase.push_account_id
  display_name = "Cascade phase ${var.phase.number} (${var.phase.name}) push invoker"
}

# ------------------------------------------------------------------ Function
resource "google_cloudfunctions2_function" "this" {
  project     = var.project_id
  location    = var.region
  name        = var.phase.deployed_name
  description = "Cascade phase ${var.phase.number} (${var.phase.name})."
  labels      = var.labels

  build_config {
    runtime         = var.runtime
    entry_point     = var.phase.entry_point
    service_account = var.build_service_account

    source {
      storage_source {
        bucket = var.source_bucket
        object = var.source_object
      }
    }
  }

  # Scaling comes from the definition (phase max_instances, concurrency): one instance serves up to
  # `concurrency` pushes at once (Cloud Run needs >= 1 vCPU for that; var.phase.cpu says so), and
  # functions-framework's gunicorn runs as many threads (THREADS). A burst beyond
  # max_instances x concurrency is answered 429 and redelivered with backoff; see docs/deploy.md
  # ("Bursts") for why that cannot dead-letter a message that never ran.
  service_config {
    min_instance_count               = 0
    max_instance_count               = var.phase.max_instances
    max_instance_request_concurrency = var.phase.concurrency
    available_cpu                    = var.phase.cpu
    available_memory                 = var.memory
    timeout_seconds                  = var.timeout_seconds
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.function.email
    environment_variables            = merge(var.environment, { THREADS = tostring(var.phase.concurrency), CASCADE_PHASE = tostring(var.phase.number) })
  }
}

# ------------------------------------------------------------------ Push subscription
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this.name
  role     = "roles/run.invoker"
  member   = google_service_account.push.member
}

# Pub/Sub mints the push's OIDC token as the push account (needed for projects created before
# 2021-04-08; harmless after).
resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent_member
}

resource "google_pubsub_subscription" "push" {
  project                    = var.project_id
  name                       = var.phase.push_subscription
  topic                      = google_pubsub_topic.trigger.id
  ack_deadline_seconds       = 600
  message_retention_duration = "604800s"
  retain_acked_messages      = false
  labels                     = var.labels

  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "${var.min_retry_backoff_seconds}s"
    maximum_backoff = "${var.max_retry_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  push_config {
    push_endpoint = google_cloudfunctions2_function.this.service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = google_cloudfunctions2_function.this.service_config[0].uri
    }
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.push_invoker,
    google_service_account_iam_member.pubsub_token_creator,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}

# Dead-lettering: the Pub/Sub service agent publishes the failed message to the dead-letter topic
# and acknowledges it on the push subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent_member
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent_member
}

# ------------------------------------------------------------------ Function permissions
resource "google_bigquery_dataset_iam_member" "writer" {
  for_each = toset(var.write_datasets)

  project    = var.project_id
  dataset_id = each.value
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.function.member
}

resource "google_bigquery_dataset_iam_member" "reader" {
  for_each = local.read_only_datasets

  project    = var.project_id
  dataset_id = each.value
  role       = "roles/bigquery.dataViewer"
  member     = google_service_account.function.member
}

# Running query jobs is a project-level permission; data access stays dataset-level above.
resource "google_project_iam_member" "bigquery_job_user" {
  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.function.member
}

# Completion tracking, leases and trigger claims in Firestore.
resource "google_project_iam_member" "datastore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.function.member
}

# The raw/export bucket, limited to the folders the definition names: raw loads read their source
# folders (objectViewer), export processors write their export folder (objectAdmin); nothing else of
# the bucket. IAM conditions on resource.name need uniform bucket-level access (set on the bucket).
resource "google_storage_bucket_iam_member" "raw_reader" {
  for_each = toset(var.phase.read_prefixes)

  bucket = var.bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.function.member

  condition {
    title       = "read ${each.value}"
    description = "Phase ${var.phase.number} reads raw files under ${each.value} only."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${var.bucket}/objects/${each.value}\")"
  }
}

resource "google_storage_bucket_iam_member" "exporter" {
  for_each = toset(var.phase.export_prefixes)

  bucket = var.bucket
  role   = "roles/storage.objectAdmin"
  member = google_service_account.function.member

  condition {
    title       = "write ${each.value}"
    description = "Phase ${var.phase.number} writes its exports under ${each.value} only."
    expression  = "resource.name.startsWith(\"projects/_/buckets/${var.bucket}/objects/${each.value}\")"
  }
}
