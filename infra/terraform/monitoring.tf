# Production alerting and the dashboard of one Cascade pipeline, derived from var.pipeline (the
# definition, through shared/deploy/tfvars.py): nothing here names a phase, a service or a log line that
# the inputs do not carry.
#
# Alert policies (every one notifies local.notification_channels; with none, incidents still open
# in the console):
#   alerts        Cascade's own alert entries (blocked / failed / stuck / backfill digest)
#   dead_letters  per phase: its dead-letter subscription holds messages
#   oldest_unacked per phase: the push subscription's oldest unacked message is too old
#   error_ratio   per phase: too many of the function's requests answered 5xx
#   freshness     per phase with a freshness objective: its daily run not complete by complete_by
# docs/deploy.md ("Alerting") says what each means and what to do.

locals {
  notification_channels = concat(var.notification_channels, google_monitoring_notification_channel.email[*].id)
  # Phases whose daily run has a wall-clock deadline (pipeline time zone).
  freshness_phases = { for k, p in local.phases : k => p if p.freshness != null }

  # The dashboard: one chart per series, built from the phases.
  dashboard_series = concat(
    [{
      title    = "Cascade alert entries by phase"
      filter   = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.alerts.name}\""
      aligner  = "ALIGN_SUM"
      group_by = ["metric.label.phase"]
      plot     = "STACKED_BAR"
    }],
    [for k, p in local.freshness_phases : {
      title    = "Phase ${k} (${p.name}): daily runs done (due ${p.freshness.complete_by})"
      filter   = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.daily_done[k].name}\""
      aligner  = "ALIGN_SUM"
      group_by = []
      plot     = "STACKED_BAR"
    }],
    flatten([for k, p in local.phases : [
      {
        title    = "Phase ${k} (${p.name}): undelivered messages (${p.push_subscription})"
        filter   = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" resource.type=\"pubsub_subscription\" resource.label.\"subscription_id\"=\"${p.push_subscription}\""
        aligner  = "ALIGN_MAX"
        group_by = []
        plot     = "LINE"
      },
      {
        title    = "Phase ${k} (${p.name}): oldest unacked message age (s)"
        filter   = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" resource.type=\"pubsub_subscription\" resource.label.\"subscription_id\"=\"${p.push_subscription}\""
        aligner  = "ALIGN_MAX"
        group_by = []
        plot     = "LINE"
      },
      {
        title    = "Phase ${k} (${p.name}): dead letters (${p.dead_letter_subscription})"
        filter   = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" resource.type=\"pubsub_subscription\" resource.label.\"subscription_id\"=\"${p.dead_letter_subscription}\""
        aligner  = "ALIGN_MAX"
        group_by = []
        plot     = "LINE"
      },
      {
        title    = "Phase ${k} (${p.name}): requests by response class (${p.deployed_name})"
        filter   = "metric.type=\"run.googleapis.com/request_count\" resource.type=\"cloud_run_revision\" resource.label.\"service_name\"=\"${p.deployed_name}\""
        aligner  = "ALIGN_SUM"
        group_by = ["metric.label.response_code_class"]
        plot     = "STACKED_BAR"
      },
      {
        title    = "Phase ${k} (${p.name}): instances (max ${p.max_instances} x ${p.concurrency} requests)"
        filter   = "metric.type=\"run.googleapis.com/container/instance_count\" resource.type=\"cloud_run_revision\" resource.label.\"service_name\"=\"${p.deployed_name}\""
        aligner  = "ALIGN_MAX"
        group_by = ["metric.label.state"]
        plot     = "STACKED_AREA"
      },
    ]]),
  )
}

# ------------------------------------------------------------------ Notification channel (optional)
resource "google_monitoring_notification_channel" "email" {
  count = var.alert_email == null ? 0 : 1

  project      = var.project_id
  display_name = "Cascade ${var.pipeline.name} alerts"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }

  depends_on = [google_project_service.apis]
}

# ------------------------------------------------------------------ Cascade's alert entries
# cascade.runtime.alerts.LogAlertSink writes each alert as one structured line: severity ERROR, jsonPayload
# `alert: true`, entry labels pipeline / phase / processor / date. The filter
# (var.pipeline.monitoring.alert_log_filter) matches exactly those, on the pipeline's services.
resource "google_logging_metric" "alerts" {
  project     = var.project_id
  name        = var.pipeline.monitoring.alert_metric
  description = "Cascade ${var.pipeline.name} alert entries (blocked, failed for good, stuck, backfill digests)."
  filter      = var.pipeline.monitoring.alert_log_filter

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Cascade ${var.pipeline.name} alerts"

    labels {
      key         = "phase"
      value_type  = "STRING"
      description = "Phase of the alert (entry label phase)."
    }
    labels {
      key         = "processor"
      value_type  = "STRING"
      description = "Processor of the alert, if any (entry label processor)."
    }
  }

  label_extractors = {
    phase     = "EXTRACT(labels.phase)"
    processor = "EXTRACT(labels.processor)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "alerts" {
  project               = var.project_id
  display_name          = "Cascade ${var.pipeline.name}: alert entries"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "Cascade logged an alert (blocked, failed, stuck)"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.alerts.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.phase", "metric.label.processor"]
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    content   = "A Cascade function logged an alert (one incident per phase and processor, not one e-mail per entry). Read it: `gcloud logging read '${replace(var.pipeline.monitoring.alert_log_filter, "\n", " ")}' --limit=20`; then `cascade status --date <date>` shows the reason and the command that resolves it. See docs/deploy.md (Alerting)."
    mime_type = "text/markdown"
  }
}

# ------------------------------------------------------------------ Dead letters (per phase)
# A message in a dead-letter subscription failed max_delivery_attempts deliveries: a person has to
# look (docs/deploy.md, "Dead letters").
resource "google_monitoring_alert_policy" "dead_letters" {
  for_each = local.phases

  project               = var.project_id
  display_name          = "Cascade ${var.pipeline.name} phase ${each.key}: dead letters"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "${each.value.dead_letter_subscription} holds messages"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${module.phase[each.key].dead_letter_subscription_name}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    content   = "Messages reached ${each.value.dead_letter_subscription} after ${var.max_delivery_attempts} failed deliveries. `cascade dlq list --phase ${each.key}`, fix, then `cascade dlq replay --phase ${each.key}`. See docs/deploy.md (Dead letters)."
    mime_type = "text/markdown"
  }
}

# ------------------------------------------------------------------ Backlog age (per push subscription)
resource "google_monitoring_alert_policy" "oldest_unacked" {
  for_each = local.phases

  project               = var.project_id
  display_name          = "Cascade ${var.pipeline.name} phase ${each.key}: oldest unacked message"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "${each.value.push_subscription} oldest unacked message older than ${var.oldest_unacked_alert_seconds}s"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${module.phase[each.key].push_subscription_name}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.oldest_unacked_alert_seconds
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    content   = "Phase ${each.key} is not keeping up with ${each.value.push_subscription} (a burst still draining, or deliveries that keep failing). Check the dashboard and the function's logs. See docs/deploy.md (Alerting)."
    mime_type = "text/markdown"
  }
}

# ------------------------------------------------------------------ Function error ratio (per phase)
resource "google_monitoring_alert_policy" "error_ratio" {
  for_each = local.phases

  project               = var.project_id
  display_name          = "Cascade ${var.pipeline.name} phase ${each.key}: function 5xx ratio"
  combiner              = "OR"
  notification_channels = local.notification_channels

  conditions {
    display_name = "${each.value.deployed_name}: more than ${var.function_error_ratio * 100}% of requests answered 5xx"
    condition_threshold {
      filter             = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${module.phase[each.key].function_name}\" AND metric.type = \"run.googleapis.com/request_count\" AND metric.labels.response_code_class = \"5xx\""
      denominator_filter = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${module.phase[each.key].function_name}\" AND metric.type = \"run.googleapis.com/request_count\""
      comparison         = "COMPARISON_GT"
      threshold_value    = var.function_error_ratio
      duration           = "0s"
      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
      denominator_aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }

  documentation {
    content   = "The phase ${each.key} function answers 5xx (transient failures Pub/Sub redelivers) on too many requests. `gcloud functions logs read ${each.value.deployed_name} --gen2 --limit=50`. See docs/deploy.md (Alerting)."
    mime_type = "text/markdown"
  }
}

# ------------------------------------------------------------------ Freshness objectives (per phase)
# "Phase N's daily run is complete by complete_by (pipeline time zone)". Two conditions, AND:
#   deadline  a Cloud Scheduler job at complete_by, in the pipeline's time zone (so DST is exact),
#             publishes one tick to the phase's deadline topic; the condition holds for tick_seconds;
#   not done  the phase's daily-done log metric counted nothing over window_seconds
#             (= complete_by - schedule + tick_seconds: exactly today's run, never yesterday's).
# The daily-done metric counts the phase's "phase N for <date>: ...; complete=True" summary lines of
# daily-mode runs, and the "skipped: no data expected" lines of its chain (nothing runs on such days).
resource "google_pubsub_topic" "deadline" {
  for_each = local.freshness_phases

  project = var.project_id
  name    = each.value.freshness.deadline_topic
  labels  = local.labels

  message_retention_duration = "600s"

  depends_on = [google_project_service.apis]
}

resource "google_cloud_scheduler_job" "deadline" {
  for_each = local.freshness_phases

  project     = var.project_id
  region      = var.region
  name        = "${each.value.freshness.deadline_topic}-tick"
  description = "Freshness deadline of phase ${each.key} (${each.value.name}) of ${var.pipeline.name}: complete by ${each.value.freshness.complete_by}."
  schedule    = each.value.freshness.deadline_schedule
  time_zone   = var.pipeline.time_zone
  paused      = var.scheduler_paused

  retry_config {
    retry_count = 0
  }

  pubsub_target {
    topic_name = google_pubsub_topic.deadline[each.key].id
    data       = base64encode(jsonencode({ pipeline = var.pipeline.name, phase = each.value.number, complete_by = each.value.freshness.complete_by }))
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "daily_done" {
  for_each = local.freshness_phases

  project     = var.project_id
  name        = each.value.freshness.metric
  description = "Daily runs of phase ${each.key} of ${var.pipeline.name} found complete (or a date of its chain with no data expected)."
  filter      = each.value.freshness.log_filter

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Cascade ${var.pipeline.name} phase ${each.key} daily done"
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "freshness" {
  for_each = local.freshness_phases

  project               = var.project_id
  display_name          = "Cascade ${var.pipeline.name} phase ${each.key}: not complete by ${each.value.freshness.complete_by}"
  combiner              = "AND"
  notification_channels = local.notification_channels

  conditions {
    display_name = "deadline ${each.value.freshness.complete_by} (${var.pipeline.time_zone}) reached"
    condition_threshold {
      filter          = "resource.type = \"pubsub_topic\" AND resource.labels.topic_id = \"${google_pubsub_topic.deadline[each.key].name}\" AND metric.type = \"pubsub.googleapis.com/topic/send_message_operation_count\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "${each.value.freshness.tick_seconds}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  conditions {
    display_name = "phase ${each.key} daily run not complete since ${each.value.freshness.starts}"
    condition_threshold {
      filter                  = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.daily_done[each.key].name}\""
      comparison              = "COMPARISON_LT"
      threshold_value         = 1
      duration                = "0s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_ACTIVE"
      aggregations {
        alignment_period     = "${each.value.freshness.window_seconds}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  documentation {
    content   = "Phase ${each.key} (${each.value.name}) of ${var.pipeline.name} has not completed its daily run by ${each.value.freshness.complete_by} (${var.pipeline.time_zone}; run started by phase ${each.value.freshness.schedule_phase} at ${each.value.freshness.starts}). `cascade status --date <date>` shows what is missing, blocked or failed. The incident closes itself when the deadline window ends; the notification is the signal. See docs/deploy.md (Alerting)."
    mime_type = "text/markdown"
  }
}

# ------------------------------------------------------------------ Dashboard
resource "google_monitoring_dashboard" "this" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName = "Cascade ${var.pipeline.name}"
    gridLayout = {
      columns = 3
      widgets = [for w in local.dashboard_series : {
        title = w.title
        xyChart = {
          dataSets = [{
            plotType = w.plot
            timeSeriesQuery = {
              timeSeriesFilter = {
                filter = w.filter
                aggregation = {
                  alignmentPeriod    = "300s"
                  perSeriesAligner   = w.aligner
                  crossSeriesReducer = "REDUCE_SUM"
                  groupByFields      = w.group_by
                }
              }
            }
          }]
        }
      }]
    }
  })

  depends_on = [google_project_service.apis]
}
