output "topic_id" {
  description = "Trigger topic id (projects/<p>/topics/<name>)."
  value       = google_pubsub_topic.trigger.id
}

output "topic_name" {
  description = "Trigger topic name."
  value       = google_pubsub_topic.trigger.name
}

output "dead_letter_topic_name" {
  description = "Dead-letter topic name."
  value       = google_pubsub_topic.dead_letter.name
}

output "dead_letter_subscription_name" {
  description = "Pull subscription on the dead-letter topic."
  value       = google_pubsub_subscription.dead_letter.name
}

output "push_subscription_name" {
  description = "Push subscription delivering triggers to the function."
  value       = google_pubsub_subscription.push.name
}

output "function_name" {
  description = "Deployed function (and Cloud Run service) name."
  value       = google_cloudfunctions2_function.this.name
}

output "function_uri" {
  description = "The function's Cloud Run URL (push endpoint and OIDC audience)."
  value       = google_cloudfunctions2_function.this.service_config[0].uri
}

output "service_account_email" {
  description = "The function's runtime service account."
  value       = google_service_account.function.email
}

output "service_account_member" {
  description = "The function's runtime service account as an IAM member."
  value       = google_service_account.function.member
}

output "push_service_account_email" {
  description = "The account whose OIDC token the push subscription presents."
  value       = google_service_account.push.email
}
