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

  service_config {
    min_instance_count               = 0
    max_instance_count               = var.max_instances
    max_instance_request_concurrency = 1
    available_memory                 = var.memory
    timeout_seconds                  = var.timeout_seconds
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.function.email
    environment_variables            = var.environment
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

resource "google_storage_bucket_iam_member" "bucket" {
  count = var.bucket_role == null ? 0 : 1

  bucket = var.bucket
  role   = var.bucket_role
  member = google_service_account.function.member
}
