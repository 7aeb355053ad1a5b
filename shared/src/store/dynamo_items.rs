//! Reading and writing one DynamoDB item's attributes: the keys, numbers, text and JSON bodies
//! that the write-back and hunting records share (one home, so that a body that does not parse
//! is reported the same way everywhere).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::RegistryError;

pub(super) type Item = HashMap<String, AttributeValue>;

/// The primary key of an item: partition `pk`, sort `sk`.
pub(super) fn item_key(pk: String, sk: String) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk)),
        ("sk".to_owned(), AttributeValue::S(sk)),
    ])
}

pub(super) fn text(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn text_of<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|value| value.as_s().ok())
        .map(String::as_str)
}

pub(super) fn number_of(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|value| value.as_n().ok())
        .and_then(|value| value.parse().ok())
}

/// The record kept as JSON in the item's `body`; `what` names it in the error.
pub(super) fn body_of<T: serde::de::DeserializeOwned>(
    item: &Item,
    what: &str,
) -> Result<T, RegistryError> {
    let body = text_of(item, "body")
        .ok_or_else(|| RegistryError::Corrupt(format!("{what}: body is missing")))?;
    serde_json::from_str(body).map_err(|error| RegistryError::Corrupt(format!("{what}: {error}")))
}

/// A record as the JSON kept in an item's `body`.
pub(super) fn serialised(
    value: &impl serde::Serialize,
    what: &str,
) -> Result<String, RegistryError> {
    serde_json::to_string(value).map_err(|error| RegistryError::Corrupt(format!("{what}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_round_trips_and_a_broken_one_names_its_record() {
        let mut item = item_key("P".into(), "S".into());
        item.insert(
            "body".into(),
            text(serialised(&serde_json::json!({"a": 1}), "thing").unwrap()),
        );
        item.insert("n".into(), number(42));
        let body: serde_json::Value = body_of(&item, "thing").unwrap();
        assert_eq!(body["a"], 1);
        assert_eq!(number_of(&item, "n"), Some(42));
        assert_eq!(text_of(&item, "pk"), Some("P"));
        assert_eq!(number_of(&item, "pk"), None);

        item.insert("body".into(), text("{"));
        let broken = body_of::<serde_json::Value>(&item, "thing").unwrap_err();
        assert!(
            matches!(&broken, RegistryError::Corrupt(message) if message.starts_with("thing: "))
        );
        item.remove("body");
        let missing = body_of::<serde_json::Value>(&item, "thing").unwrap_err();
        assert!(
            matches!(&missing, RegistryError::Corrupt(message) if message == "thing: body is missing")
        );
    }
}
