//! The `ORCH_<SECTION>_<KEY>` override layer (DESIGN §8): every scalar key of
//! `[server]`, `[store]`, `[node]` and `[reaper]` can be set from the environment,
//! which wins over the file.
//!
//! The binary reads the environment and passes it in as a map, so this stays a pure
//! function and tests can override without touching the process environment.

use std::collections::BTreeMap;

use super::diag::{At, Origin, Sink};
use super::schema::{self, Kind, SCALARS, Scalar};

/// `ORCH_*` variables with a config section's prefix that orch reads elsewhere, so
/// they are not typos of config keys.
const NOT_CONFIG_KEYS: &[&str] = &["ORCH_SERVER_TOKEN"];

/// Applies every override found in `env` to `scalars`; a value that does not parse
/// is reported against its variable and leaves the file's value in place.
pub(crate) fn apply(
    env: &BTreeMap<String, String>,
    scalars: &mut BTreeMap<(&'static str, &'static str), At<Scalar>>,
    sink: &mut Sink,
) {
    for spec in SCALARS {
        let var = spec.env_var();
        let Some(text) = env.get(&var) else { continue };
        let origin = Origin::Env(var);
        match parse(spec.kind, text) {
            Some(value) => {
                scalars.insert((spec.section, spec.key), At::new(value, origin));
            }
            None => sink.error(&origin, spec.path(), format!("expected {}, got {text:?}", spec.kind.expected())),
        }
    }
}

fn parse(kind: Kind, text: &str) -> Option<Scalar> {
    let t = text.trim();
    match kind {
        Kind::Text => Some(Scalar::Text(text.to_owned())),
        Kind::Seconds => t.parse::<f64>().ok().map(Scalar::Seconds),
        Kind::Count => t.parse::<i64>().ok().map(Scalar::Count),
        Kind::Flag => match t.to_ascii_lowercase().as_str() {
            "true" | "1" => Some(Scalar::Flag(true)),
            "false" | "0" => Some(Scalar::Flag(false)),
            _ => None,
        },
    }
}

/// An `ORCH_<SECTION>_…` variable that overrides nothing: most likely a misspelt
/// override, which would otherwise be ignored in silence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrayVar {
    /// The variable as set.
    pub var: String,
    /// The override it most likely meant.
    pub suggestion: Option<String>,
}

/// The variables in `env` that look like config overrides (they start with
/// `ORCH_SERVER_`, `ORCH_STORE_`, `ORCH_NODE_` or `ORCH_REAPER_`) but name no key,
/// so the binary can warn about them. Other `ORCH_*` variables are left alone.
pub fn stray_overrides(env: &BTreeMap<String, String>) -> Vec<StrayVar> {
    let known: Vec<String> = SCALARS.iter().map(|s| s.env_var()).collect();
    let prefixes: Vec<String> =
        schema::SCALAR_SECTIONS.iter().map(|s| format!("ORCH_{}_", s.to_ascii_uppercase())).collect();
    env.keys()
        .filter(|var| prefixes.iter().any(|p| var.starts_with(p.as_str())))
        .filter(|var| !known.contains(var) && !NOT_CONFIG_KEYS.contains(&var.as_str()))
        .map(|var| StrayVar {
            var: var.clone(),
            suggestion: schema::closest(var, known.iter().map(String::as_str)).map(str::to_owned),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_numbers_parse_leniently() {
        assert_eq!(parse(Kind::Flag, "FALSE"), Some(Scalar::Flag(false)));
        assert_eq!(parse(Kind::Flag, "1"), Some(Scalar::Flag(true)));
        assert_eq!(parse(Kind::Flag, "off"), None);
        assert_eq!(parse(Kind::Seconds, " 0.25 "), Some(Scalar::Seconds(0.25)));
        assert_eq!(parse(Kind::Count, "8"), Some(Scalar::Count(8)));
        assert_eq!(parse(Kind::Count, "8.5"), None);
    }

    #[test]
    fn stray_overrides_flag_typos_but_not_other_orch_vars() {
        let env: BTreeMap<String, String> = [
            "ORCH_REAPER_FINALISE_GRACE_S",
            "ORCH_REAPER_INTERVAL_S",
            "ORCH_SERVER_TOKEN",
            "ORCH_CONFIG",
            "ORCH_TEST_DATABASE_URL",
            "ORCH_ITEM",
        ]
        .into_iter()
        .map(|k| (k.to_owned(), "1".to_owned()))
        .collect();
        assert_eq!(
            stray_overrides(&env),
            vec![StrayVar {
                var: "ORCH_REAPER_FINALISE_GRACE_S".into(),
                suggestion: Some("ORCH_REAPER_FINALIZE_GRACE_S".into()),
            }]
        );
    }
}
