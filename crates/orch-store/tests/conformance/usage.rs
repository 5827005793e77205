//! Usage per job (migration 0007): what the owner records with a run's exit is
//! what every reader gets back, a stale owner cannot write it, and a run that
//! reported nothing reads as no usage.

use orch_core::Usage;
use orch_store::{Error, ExitInfo};

use crate::specs::{claimed, run_info};
use crate::support::{TestDb, at};

/// A claimed, started job: its owner's exit carries the run's usage; the job
/// row returns it exactly, and a write under a stale epoch changes nothing.
pub(crate) async fn usage_is_recorded_with_the_exit_and_fenced(db: &TestDb) {
    let store = &*db.store;
    let jobs = claimed(store, "SHOP", 2, "a").await;
    let (job, bare) = (&jobs[0], &jobs[1]);
    store.record_started(job.id, 1, run_info(9), at(2)).await.unwrap();
    let usage = Usage {
        turns: 3,
        input_tokens: 300,
        output_tokens: 60,
        cache_read_tokens: 7,
        cache_write_tokens: 5,
        cost_usd: Some(0.0018),
    };
    let stale = ExitInfo { exit_code: Some(0), usage: Some(Usage { turns: 99, ..usage }), ..ExitInfo::default() };
    let err = store.record_finished(job.id, 0, stale, at(3)).await.unwrap_err();
    assert!(matches!(err, Error::FencedOut { .. }), "{err:?}");
    let exit = ExitInfo { exit_code: Some(0), usage: Some(usage), ..ExitInfo::default() };
    store.record_finished(job.id, 1, exit, at(3)).await.unwrap();
    assert_eq!(store.get_job(job.id).await.unwrap().unwrap().usage, Some(usage));

    store.record_started(bare.id, 1, run_info(10), at(4)).await.unwrap();
    store.record_finished(bare.id, 1, ExitInfo { exit_code: Some(0), ..ExitInfo::default() }, at(5)).await.unwrap();
    assert_eq!(store.get_job(bare.id).await.unwrap().unwrap().usage, None);
    let listed = store.jobs_for_item(&job.item).await.unwrap();
    assert_eq!(listed.iter().find(|j| j.id == job.id).and_then(|j| j.usage), Some(usage));
}
