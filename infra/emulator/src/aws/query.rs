//! The AWS Query protocol's request side: form fields (`Action`, `Version`, `Name.member.N`
//! lists) and the caller named by the SigV4 `Authorization` header.

use axum::http::{HeaderMap, header};

/// The decoded form of one Query request. Deliberately not `Debug`: a client could put
/// anything in it.
pub(crate) struct QueryRequest {
    fields: Vec<(String, String)>,
}

impl QueryRequest {
    /// Reads an `application/x-www-form-urlencoded` body.
    pub(crate) fn parse(body: &[u8]) -> QueryRequest {
        QueryRequest {
            fields: url::form_urlencoded::parse(body)
                .map(|(name, value)| (name.into_owned(), value.into_owned()))
                .collect(),
        }
    }

    /// The first value of a field.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// A Query list (`{name}.member.1`, `{name}.member.2`, ...) in member order. Members that
    /// do not parse as positive numbers are ignored, as AWS ignores unknown fields.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.member.");
        let mut members: Vec<(u32, &str)> = self
            .fields
            .iter()
            .filter_map(|(field, value)| {
                let index = field.strip_prefix(&prefix)?.parse::<u32>().ok()?;
                (index > 0).then_some((index, value.as_str()))
            })
            .collect();
        members.sort_by_key(|(index, _)| *index);
        members.dedup_by_key(|(index, _)| *index);
        members
            .into_iter()
            .map(|(_, value)| value.to_owned())
            .collect()
    }

    /// A list of `{Key, Value}` structures (`Tags.member.N.Key`, `Tags.member.N.Value`).
    pub(crate) fn key_values(&self, name: &str) -> Vec<(String, String)> {
        let keys = self.list_of_member_field(name, "Key");
        let values = self.list_of_member_field(name, "Value");
        keys.into_iter()
            .map(|(index, key)| {
                let value = values
                    .iter()
                    .find(|(at, _)| *at == index)
                    .map(|(_, value)| value.clone())
                    .unwrap_or_default();
                (key, value)
            })
            .collect()
    }

    fn list_of_member_field(&self, name: &str, member_field: &str) -> Vec<(u32, String)> {
        let prefix = format!("{name}.member.");
        let suffix = format!(".{member_field}");
        let mut found: Vec<(u32, String)> = self
            .fields
            .iter()
            .filter_map(|(field, value)| {
                let index = field
                    .strip_prefix(&prefix)?
                    .strip_suffix(&suffix)?
                    .parse::<u32>()
                    .ok()?;
                Some((index, value.clone()))
            })
            .collect();
        found.sort_by_key(|(index, _)| *index);
        found.dedup_by_key(|(index, _)| *index);
        found
    }
}

/// Who signed the request, as far as the emulator can tell without checking the signature:
/// the access key id and region of the SigV4 credential scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub access_key_id: String,
    pub region: String,
}

impl Caller {
    /// `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, ...`
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Caller> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let parameters = value.strip_prefix("AWS4-HMAC-SHA256")?;
        let scope = parameters
            .split(',')
            .find_map(|part| part.trim().strip_prefix("Credential="))?;
        let mut parts = scope.split('/');
        let access_key_id = parts.next().filter(|id| !id.is_empty())?;
        let _date = parts.next()?;
        let region = parts.next().filter(|region| !region.is_empty())?;
        Some(Caller {
            access_key_id: access_key_id.to_owned(),
            region: region.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn lists_come_in_member_order() {
        let request = QueryRequest::parse(
            b"Action=GetWebIdentityToken&Audience.member.2=b&Audience.member.1=a\
              &Audience.member.x=ignored&Audience.member.0=ignored&Other.member.1=c",
        );
        assert_eq!(request.get("Action"), Some("GetWebIdentityToken"));
        assert_eq!(request.list("Audience"), ["a", "b"]);
        assert!(request.list("Missing").is_empty());
    }

    #[test]
    fn tags_pair_keys_with_values() {
        let request = QueryRequest::parse(
            b"Tags.member.2.Key=team&Tags.member.2.Value=soc&Tags.member.1.Key=env&Tags.member.1.Value=dev",
        );
        assert_eq!(
            request.key_values("Tags"),
            [
                ("env".to_owned(), "dev".to_owned()),
                ("team".to_owned(), "soc".to_owned())
            ]
        );
    }

    #[test]
    fn caller_comes_from_the_credential_scope() {
        let mut headers = HeaderMap::new();
        assert_eq!(Caller::from_headers(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261203/eu-west-1/sts/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=abc",
            ),
        );
        assert_eq!(
            Caller::from_headers(&headers),
            Some(Caller {
                access_key_id: "AKIDEXAMPLE".to_owned(),
                region: "eu-west-1".to_owned()
            })
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(Caller::from_headers(&headers), None);
    }
}
