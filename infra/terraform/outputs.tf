output "phases" {
  description = "Per phase: function, topics, subscriptions and identities."
  value = {
    for k, m in module.phase : k => {
      function                 = m.function_name
      function_uri             = m.function_uri
      topic                    = m.topic_name
      push_subscription        = m.push_subscription_name
      dead_letter_topic        = m.dead_letter_topic_name
      dead_letter_subscription = m.dead_letter_subscription_name
      service_account          = m.service_account_email
      push_service_account     = m.push_service_account_email
      source_object            = google_storage_bucket_object.phase_source[k].name
    }
  }
}

output "scheduler_jobs" {
  description = "Cloud Scheduler jobs (phase number -> job name), plus the sweeper's under \"sweeper\"."
  value = merge(
    { for k, j in google_cloud_scheduler_job.phase : k => j.name },
    local.sweeper_enabled ? { sweeper = google_cloud_scheduler_job.sweeper[0].name } : {},
  )
}

output "raw_bucket" {
  description = "Bucket of raw scraped files (and exports)."
  value       = google_storage_bucket.raw.name
}

output "source_bucket" {
  description = "Bucket of the functions' hash-named source zips (versioned; used for rollbacks)."
  value       = google_storage_bucket.source.name
}

output "datasets" {
  description = "BigQuery datasets of the pipeline."
  value       = [for d in google_bigquery_dataset.this : d.dataset_id]
}

output "sweeper_function" {
  description = "Name of the sweeper function, or null when functions/sweeper/main.py does not exist yet."
  value       = local.sweeper_enabled ? google_cloudfunctions2_function.sweeper[0].name : null
}

output "pubsub_service_agent" {
  description = "The Pub/Sub service agent granted dead-lettering permissions."
  value       = local.pubsub_service_agent
}

output "raw_file_contract" {
  description = "Where each raw-load processor expects its file ({date} = the partition date, YYYY-MM-DD) and the key of its records list. One JSON object per date, written before the phase's schedule."
  value = flatten([for k, p in local.phases : [for s in p.raw_sources : {
    phase     = p.number
    processor = s.processor
    uri       = "gs://${google_storage_bucket.raw.name}/${s.path}"
    records   = s.records
  }]])
}

output "freshness_objectives" {
  description = "Per phase with a daily schedule upstream: the time (pipeline time zone) its daily run must be complete by."
  value       = { for k, p in local.freshness_phases : k => "${p.freshness.complete_by} ${var.pipeline.time_zone}" }
}

output "dashboard" {
  description = "The Cloud Monitoring dashboard of the pipeline."
  value       = google_monitoring_dashboard.this.id
}
