//! PostgreSQL backend (placeholder while SQLite lands).
use crate::{Error, Result};
pub(crate) struct PgStore;
impl PgStore {
    pub(crate) async fn open(url: &str) -> Result<std::sync::Arc<dyn crate::Store>> {
        Err(Error::UnknownScheme { url: url.to_owned() })
    }
}
