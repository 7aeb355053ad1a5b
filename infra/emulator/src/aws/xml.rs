//! The AWS Query protocol's answers: `<{Action}Response>` documents and `<ErrorResponse>`.
//!
//! Built with format strings; every value goes through [`escape`]. The documents are small and
//! fixed in shape, so a serializer would add a dependency without making them safer.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

pub(crate) const STS_NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
pub(crate) const IAM_NAMESPACE: &str = "https://iam.amazonaws.com/doc/2010-05-08/";

/// Escapes text for XML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// `<{action}Response><{action}Result>{result}</..><ResponseMetadata>..`; `result` is XML
/// already escaped by the caller.
pub(crate) fn success(action: &str, namespace: &str, result: &str) -> Response {
    let request_id = Uuid::new_v4().to_string();
    let body = format!(
        "<{action}Response xmlns=\"{namespace}\">\n  <{action}Result>\n{result}  </{action}Result>\n  \
         <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</{action}Response>\n"
    );
    xml_response(StatusCode::OK, body, &request_id)
}

/// Whose fault an error is, AWS's `<Type>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Sender,
    Receiver,
}

/// One AWS error answer. The message is built from public facts only (ARNs, numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AwsError {
    pub status: StatusCode,
    pub fault: Fault,
    pub code: Cow<'static, str>,
    pub message: String,
    pub namespace: &'static str,
}

impl AwsError {
    pub(crate) fn sender(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        AwsError {
            status,
            fault: Fault::Sender,
            code: code.into(),
            message: message.into(),
            namespace: STS_NAMESPACE,
        }
    }

    pub(crate) fn in_namespace(mut self, namespace: &'static str) -> Self {
        self.namespace = namespace;
        self
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let request_id = Uuid::new_v4().to_string();
        let fault = match self.fault {
            Fault::Sender => "Sender",
            Fault::Receiver => "Receiver",
        };
        let body = format!(
            "<ErrorResponse xmlns=\"{}\">\n  <Error>\n    <Type>{fault}</Type>\n    <Code>{}</Code>\n    \
             <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
            self.namespace,
            escape(&self.code),
            escape(&self.message)
        );
        xml_response(self.status, body, &request_id)
    }
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
    }

    #[tokio::test]
    async fn error_has_aws_shape() {
        let response =
            AwsError::sender(StatusCode::FORBIDDEN, "AccessDenied", "no <way>").into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/xml");
        let request_id = response.headers()["x-amzn-requestid"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.starts_with(&format!("<ErrorResponse xmlns=\"{STS_NAMESPACE}\">")));
        assert!(body.contains("<Type>Sender</Type>"));
        assert!(body.contains("<Code>AccessDenied</Code>"));
        assert!(body.contains("<Message>no &lt;way&gt;</Message>"));
        assert!(body.contains(&format!("<RequestId>{request_id}</RequestId>")));
    }
}
