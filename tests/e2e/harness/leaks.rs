//! The check the end-to-end tests end with: no token or secret a test saw reached any output.

/// Fails naming each leak by log, value number, length and line, never by the value itself.
#[track_caller]
pub fn assert_no_leaks(logs: &[(&str, &str)], sensitive: &[String]) {
    let mut leaks = Vec::new();
    for (name, text) in logs {
        for (index, value) in sensitive.iter().enumerate() {
            if let Some(position) = text.find(value.as_str()) {
                let line = text[..position].lines().count();
                leaks.push(format!(
                    "sensitive value #{index} ({} chars) on {name} log line {line}",
                    value.len()
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets reached the logs: {leaks:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_logs_pass() {
        assert_no_leaks(&[("a", "nothing here")], &["s3cr3t-value".to_owned()]);
    }

    #[test]
    #[should_panic(expected = "sensitive value #1 (12 chars) on b log line 2")]
    fn a_leak_is_named_without_the_value() {
        assert_no_leaks(
            &[("a", "clean"), ("b", "first\nsecond s3cr3t-value")],
            &["other-value!".to_owned(), "s3cr3t-value".to_owned()],
        );
    }
}
