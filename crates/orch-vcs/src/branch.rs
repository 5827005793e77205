//! The item branch's name, `feature/<KEY>-<kind>-<slug>`: derived once from the
//! item and stable for its life, so every node and every retry names the same
//! branch without asking anyone.

use orch_core::{ItemKey, ItemKind};

/// Most characters of a slug.
pub const SLUG_MAX: usize = 40;

/// The title's lowercase ASCII words joined by `-`, at most [`SLUG_MAX`]
/// characters, cut at a word boundary where one is near; `item` if the title has
/// no ASCII letters or digits at all.
pub fn slug(title: &str) -> String {
    let words =
        title.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_ascii_lowercase);
    let mut out = String::new();
    for word in words {
        let extra = if out.is_empty() { word.len() } else { word.len() + 1 };
        if out.len() + extra > SLUG_MAX {
            if out.is_empty() {
                out = word[..SLUG_MAX].to_owned();
            }
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&word);
    }
    if out.is_empty() { "item".to_owned() } else { out }
}

/// `feature/<KEY>-<kind>-<slug>`.
pub fn item_branch(key: &ItemKey, kind: ItemKind, title: &str) -> String {
    format!("feature/{key}-{}-{}", kind.as_str(), slug(title))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_short_lowercase_ascii_words() {
        assert_eq!(slug("Fix the checkout!"), "fix-the-checkout");
        assert_eq!(slug("  Émoji 🎉 and UTF-8 — café  "), "moji-and-utf-8-caf");
        assert_eq!(slug("日本語"), "item");
        let long = slug("a very long title that goes on and on well past forty characters");
        assert!(long.len() <= SLUG_MAX, "{long}");
        assert_eq!(long, "a-very-long-title-that-goes-on-and-on");
        assert_eq!(slug(&"x".repeat(60)).len(), SLUG_MAX);
    }

    #[test]
    fn branch_names_carry_key_kind_and_slug() {
        let key: ItemKey = "SHOP-12".parse().unwrap();
        assert_eq!(item_branch(&key, ItemKind::Bug, "Fix the checkout"), "feature/SHOP-12-bug-fix-the-checkout");
    }
}
