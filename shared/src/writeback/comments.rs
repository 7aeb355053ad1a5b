//! Comments are not idempotent at Microsoft: a POST whose answer was lost may have been applied,
//! and posting again leaves two copies that nobody can delete. After an ambiguous failure we
//! read the comments and post again only when ours is not among them.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::defender::time::parse_api_time;

/// Clocks differ between us and Microsoft; a comment stamped this much before our first attempt
/// still counts as possibly ours.
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// Whether `comments` (Graph's `comments` list of an incident or alert) holds `text` created
/// since `first_attempt` (less the skew): then our earlier POST went through.
pub fn already_posted(comments: &[Value], text: &str, first_attempt: DateTime<Utc>) -> bool {
    let since = first_attempt - CLOCK_SKEW;
    comments.iter().any(|comment| {
        let same_text = comment
            .get("comment")
            .and_then(Value::as_str)
            .is_some_and(|posted| posted.trim() == text.trim());
        let recent = comment
            .get("createdDateTime")
            .and_then(Value::as_str)
            .and_then(parse_api_time)
            // A comment without a readable time could be ours: never risk a second copy.
            .is_none_or(|created| created >= since);
        same_text && recent
    })
}

/// The `comments` of an incident or alert as Graph answers it.
pub fn of(record: &Value) -> &[Value] {
    record
        .get("comments")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lost_answer_is_recognised_by_text_and_time() {
        let first = "2026-12-07T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let comments = vec![
            json!({"comment": "closed by SOC", "createdDateTime": "2026-12-01T10:00:00Z"}),
            json!({"comment": "escalated", "createdDateTime": "2026-12-07T10:00:01.123Z"}),
        ];
        assert!(already_posted(&comments, "escalated", first));
        // The same words a week ago were someone else's comment.
        assert!(!already_posted(&comments, "closed by SOC", first));
        assert!(!already_posted(&comments, "new words", first));
        assert!(already_posted(&[json!({"comment": "x"})], "x", first));
    }

    #[test]
    fn comments_are_read_from_graphs_answer() {
        assert_eq!(of(&json!({"comments": [{"comment": "a"}]})).len(), 1);
        assert!(of(&json!({})).is_empty());
    }
}
