//! What every verb that works on a deployment needs: the config (file plus
//! `ORCH_*` environment), the store it names, this node's id, and a runtime.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use orch_core::config::Config;
use orch_store::Store;

/// Reads and validates the config at `path` with the process's `ORCH_*` overrides.
///
/// # Errors
/// A missing file (with a hint to run `orch init`), or every diagnostic found.
pub(crate) fn load_config(path: &Path) -> anyhow::Result<Config> {
    // Absolute, so relative agent commands, data_dir and SQLite paths resolve
    // against the config's folder whatever directory an agent later runs in.
    let path = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let path = path.as_path();
    let env = crate::config::orch_env();
    crate::config::warn_stray_overrides(&env);
    Ok(crate::config::load(path, &env)??)
}

/// Opens (and migrates) the store the config names.
///
/// # Errors
/// The store's error, which names the URL.
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.store_url_resolved();
    if let Some(path) = url.strip_prefix("sqlite://")
        && let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    Ok(orch_store::open(&url).await?)
}

/// This node's id: `node.id` from the config, else the hostname with a tag of the
/// data directory, so two nodes on one host never share an id by default.
pub(crate) fn node_id(config: &Config) -> String {
    if !config.node.id.is_empty() {
        return config.node.id.clone();
    }
    let host = hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "orch-node".to_owned());
    orch_engine::identity::default_node_id(&host, &config.data_dir_resolved())
}

/// A multi-threaded runtime for one verb.
///
/// # Errors
/// The OS refusing threads.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Loads the config, opens the store, and runs `f` on a runtime.
///
/// # Errors
/// Whatever loading, opening or `f` returns.
pub(crate) fn with_store<T, F, Fut>(config_path: &Path, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Config, Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let store = open_store(&config).await?;
        f(config, store).await
    })
}
