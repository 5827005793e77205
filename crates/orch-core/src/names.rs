//! Newtypes for the names a config gives to tracks, stages, roles and gates, so a
//! stage name can never be passed where a role is expected.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a name; the config validator is what checks it is known.
            pub fn new(name: impl Into<String>) -> Self {
                Self(name.into())
            }

            /// The name as written in the config.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

name_type!(
    /// A named pipeline, e.g. `quick` or `full-cycle`.
    TrackName
);
name_type!(
    /// A step of a track, e.g. `development`.
    StageName
);
name_type!(
    /// The agent role that runs a stage, e.g. `developer`.
    RoleName
);
name_type!(
    /// A quality gate on an edge, e.g. `retest`.
    GateName
);

impl TrackName {
    /// The track an escalated item moves to.
    pub fn full_cycle() -> Self {
        Self::new("full-cycle")
    }
}
