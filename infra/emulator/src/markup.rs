//! Escaping text for the markup the emulator writes: the AWS APIs' XML and the sign-in and
//! consent pages' HTML. One rule serves both: `&#39;` is the apostrophe in either, where `&apos;`
//! is XML's and HTML5's only.

/// Escapes text for element content and quoted attribute values, in XML or HTML.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"a<b>&"c'd"#), "a&lt;b&gt;&amp;&quot;c&#39;d");
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    }
}
