//! Custom tags: Graph's PATCH replaces the whole list, so an edit is read, merged and written,
//! then verified. Tags are compared without regard to case, as Defender's portal does: removing
//! `Triage` removes `triage`, and adding `MSSP` where `mssp` exists adds nothing.

use super::request::TagEdit;

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// `current` with the edit applied: kept in their order, the removed ones dropped, the added
/// ones appended.
pub fn merged(current: &[String], edit: &TagEdit) -> Vec<String> {
    let mut tags: Vec<String> = Vec::with_capacity(current.len() + edit.add.len());
    for tag in current {
        let removed = edit.remove.iter().any(|gone| same(gone, tag));
        let repeated = tags.iter().any(|kept| same(kept, tag));
        if !removed && !repeated {
            tags.push(tag.clone());
        }
    }
    for tag in &edit.add {
        if !tags.iter().any(|kept| same(kept, tag)) {
            tags.push(tag.clone());
        }
    }
    tags
}

/// Whether `current` shows the edit: every added tag present, every removed one absent. A
/// concurrent writer that replaced the list after us makes this false, and we apply again.
pub fn holds(current: &[String], edit: &TagEdit) -> bool {
    edit.add
        .iter()
        .all(|tag| current.iter().any(|have| same(have, tag)))
        && !edit
            .remove
            .iter()
            .any(|tag| current.iter().any(|have| same(have, tag)))
}

/// The `customTags` of an incident or alert as Graph answers it (absent or null: none).
pub fn of(record: &serde_json::Value) -> Vec<String> {
    record
        .get("customTags")
        .and_then(serde_json::Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|tag| tag.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edit(add: &[&str], remove: &[&str]) -> TagEdit {
        TagEdit {
            add: add.iter().map(|t| t.to_string()).collect(),
            remove: remove.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_merge_keeps_what_others_set_and_applies_ours() {
        let current = tags(&["customer-x", "Triage", "vip"]);
        assert_eq!(
            merged(&current, &edit(&["mssp", "VIP"], &["triage"])),
            tags(&["customer-x", "vip", "mssp"])
        );
        assert_eq!(merged(&[], &edit(&["a"], &["b"])), tags(&["a"]));
    }

    #[test]
    fn a_list_replaced_by_someone_else_no_longer_holds_our_edit() {
        let ours = edit(&["mssp"], &["triage"]);
        assert!(holds(&tags(&["x", "MSSP"]), &ours));
        assert!(!holds(&tags(&["x"]), &ours));
        assert!(!holds(&tags(&["mssp", "triage"]), &ours));
    }

    #[test]
    fn tags_are_read_from_graphs_answer() {
        assert_eq!(of(&json!({"customTags": ["a", 1, "b"]})), tags(&["a", "b"]));
        assert!(of(&json!({"customTags": null})).is_empty());
        assert!(of(&json!({})).is_empty());
    }
}
