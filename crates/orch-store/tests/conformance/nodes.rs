//! The node registry (DESIGN §5): two live nodes never share an id, a dead or
//! stopped incarnation's id can be taken over (and its row is handed back for
//! reconcile), a superseded incarnation's heartbeat is refused, and the store's own
//! clock is reported where it has one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orch_store::{Backend, Error, NodeRecord, NodeRegistration, Store};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::support::{T0, TestDb, at};

/// How long a node stays live after it was last seen, in these specs.
const LIVE_FOR: Duration = Duration::from_secs(15);

fn registration(id: &str, incarnation: &str, pid: i32) -> NodeRegistration {
    NodeRegistration {
        id: id.to_owned(),
        incarnation: incarnation.to_owned(),
        host: format!("host-of-{incarnation}"),
        pid,
        data_dir: format!("/var/lib/orch/{incarnation}"),
    }
}

/// The row a fresh registration of `reg` at `now` must leave.
fn fresh(reg: &NodeRegistration, now: orch_core::Timestamp) -> NodeRecord {
    NodeRecord {
        id: reg.id.clone(),
        incarnation: reg.incarnation.clone(),
        host: reg.host.clone(),
        pid: reg.pid,
        data_dir: reg.data_dir.clone(),
        started_at: now,
        last_seen: now,
        stopped_at: None,
        clock_offset_ms: 0,
    }
}

/// On an empty registry, a registration succeeds with no previous row and stores
/// every field, `started_at = last_seen = now`, not stopped, offset 0; ids list in
/// order.
pub(crate) async fn register_node_on_empty_table(db: &TestDb) {
    let store = &*db.store;
    assert!(store.nodes().await.unwrap().is_empty());
    let b = registration("node-b", "inc-b1", 200);
    assert_eq!(store.register_node(b.clone(), T0, LIVE_FOR).await.unwrap(), None);
    let a = registration("node-a", "inc-a1", 100);
    assert_eq!(store.register_node(a.clone(), at(5), LIVE_FOR).await.unwrap(), None);
    assert_eq!(store.nodes().await.unwrap(), vec![fresh(&a, at(5)), fresh(&b, T0)]);
}

/// A node registered at `T0` (and heard from at `T0 + 5 s`) is live until
/// `last_seen + LIVE_FOR`: another incarnation registering under its id up to 1 ms
/// before that is refused with `NodeIdInUse` naming the live node's host, pid,
/// incarnation and last heartbeat, and nothing changes.
pub(crate) async fn live_node_id_is_refused_naming_it(db: &TestDb) {
    let store = &*db.store;
    let first = registration("node-1", "inc-1", 4242);
    store.register_node(first.clone(), T0, LIVE_FOR).await.unwrap();
    assert!(store.touch_node("node-1", "inc-1", at(5_000), 7).await.unwrap());
    let before = store.nodes().await.unwrap();
    let last_live = at(5_000 + 15_000 - 1);
    for now in [at(1), at(5_000), last_live] {
        let err = store.register_node(registration("node-1", "inc-2", 999), now, LIVE_FOR).await.unwrap_err();
        let Error::NodeIdInUse { id, host, pid, incarnation, last_seen } = &err else {
            panic!("expected NodeIdInUse at {now}, got {err:?}")
        };
        assert_eq!(
            (id.as_str(), host.as_str(), *pid, incarnation.as_str(), *last_seen),
            ("node-1", "host-of-inc-1", 4242, "inc-1", at(5_000))
        );
        let shown = err.to_string();
        for part in ["node id node-1", "host-of-inc-1", "pid 4242", "choose another node id or stop"] {
            assert!(shown.contains(part), "{shown:?} does not say {part:?}");
        }
    }
    assert_eq!(store.nodes().await.unwrap(), before);
}

/// A node last seen `LIVE_FOR` or more ago is dead: a new incarnation takes its id
/// over, gets a fresh row (offset reset), and is handed the dead row for reconcile.
pub(crate) async fn expired_node_id_is_taken_over(db: &TestDb) {
    let store = &*db.store;
    let old = registration("node-1", "inc-old", 11);
    store.register_node(old.clone(), T0, LIVE_FOR).await.unwrap();
    assert!(store.touch_node("node-1", "inc-old", at(2_000), -35).await.unwrap());
    let mut dead = fresh(&old, T0);
    dead.last_seen = at(2_000);
    dead.clock_offset_ms = -35;
    assert_eq!(store.nodes().await.unwrap(), vec![dead.clone()]);

    let new = registration("node-1", "inc-new", 22);
    let expired = at(2_000 + 15_000);
    assert_eq!(store.register_node(new.clone(), expired, LIVE_FOR).await.unwrap(), Some(dead));
    assert_eq!(store.nodes().await.unwrap(), vec![fresh(&new, expired)]);
}

/// A cleanly stopped node frees its id at once, well within `LIVE_FOR`; the
/// stopped row is handed to the next incarnation. Deregistering with another
/// incarnation's name stops nothing.
pub(crate) async fn deregistered_node_id_is_free_at_once(db: &TestDb) {
    let store = &*db.store;
    let first = registration("node-1", "inc-1", 11);
    store.register_node(first.clone(), T0, LIVE_FOR).await.unwrap();
    store.deregister_node("node-1", "inc-other", at(1)).await.unwrap();
    assert_eq!(store.nodes().await.unwrap()[0].stopped_at, None, "another incarnation's shutdown stopped the node");
    store.deregister_node("node-1", "inc-1", at(2)).await.unwrap();
    let mut stopped = fresh(&first, T0);
    stopped.stopped_at = Some(at(2));
    assert_eq!(store.nodes().await.unwrap(), vec![stopped.clone()]);
    // Deregistering twice keeps the first stop.
    store.deregister_node("node-1", "inc-1", at(3)).await.unwrap();
    assert_eq!(store.nodes().await.unwrap(), vec![stopped.clone()]);

    let second = registration("node-1", "inc-2", 12);
    assert_eq!(store.register_node(second.clone(), at(4), LIVE_FOR).await.unwrap(), Some(stopped));
    assert_eq!(store.nodes().await.unwrap(), vec![fresh(&second, at(4))]);
}

/// `touch_node` moves `last_seen` and the offset of the matching live incarnation
/// only: once another incarnation holds the id, the old one's heartbeat is refused
/// (`false`) and changes nothing, and so is one for an unknown id or a stopped
/// incarnation. The old incarnation's late shutdown does not stop the new one.
pub(crate) async fn touch_node_refuses_superseded_incarnation(db: &TestDb) {
    let store = &*db.store;
    store.register_node(registration("node-1", "inc-1", 11), T0, LIVE_FOR).await.unwrap();
    assert!(store.touch_node("node-1", "inc-1", at(1_000), 3).await.unwrap());
    assert!(!store.touch_node("node-9", "inc-1", at(1_000), 3).await.unwrap(), "unknown id");
    let new = registration("node-1", "inc-2", 12);
    store.register_node(new.clone(), at(20_000), LIVE_FOR).await.unwrap();

    assert!(!store.touch_node("node-1", "inc-1", at(20_001), 99).await.unwrap());
    store.deregister_node("node-1", "inc-1", at(20_002)).await.unwrap();
    assert_eq!(store.nodes().await.unwrap(), vec![fresh(&new, at(20_000))]);

    assert!(store.touch_node("node-1", "inc-2", at(21_000), -4).await.unwrap());
    store.deregister_node("node-1", "inc-2", at(22_000)).await.unwrap();
    assert!(!store.touch_node("node-1", "inc-2", at(23_000), 5).await.unwrap(), "a stopped node is not revived");
    let row = store.nodes().await.unwrap().remove(0);
    assert_eq!((row.last_seen, row.clock_offset_ms, row.stopped_at), (at(21_000), -4, Some(at(22_000))));
}

/// Registers `regs` at once, half through each of two opens of the store (two
/// processes or machines), released together by a barrier.
async fn race(stores: [&Arc<dyn Store>; 2], regs: Vec<NodeRegistration>, now: orch_core::Timestamp) -> RaceResult {
    let barrier = Arc::new(Barrier::new(regs.len()));
    let mut tasks = JoinSet::new();
    for (i, reg) in regs.into_iter().enumerate() {
        let store = stores[i % 2].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let incarnation = reg.incarnation.clone();
            (incarnation, store.register_node(reg, now, LIVE_FOR).await)
        });
    }
    let mut result = RaceResult::default();
    for (incarnation, outcome) in tasks.join_all().await {
        match outcome {
            Ok(previous) => result.winners.push((incarnation, previous)),
            Err(Error::NodeIdInUse { incarnation: holder, .. }) => result.refused_naming.push(holder),
            Err(e) => panic!("{incarnation}: unexpected error {e:?}"),
        }
    }
    result
}

#[derive(Default)]
struct RaceResult {
    winners: Vec<(String, Option<NodeRecord>)>,
    /// The incarnation each refusal named as the live holder.
    refused_naming: Vec<String>,
}

/// Eight incarnations register one new id at the same instant through two opens
/// of the store: exactly one wins and the other seven are refused naming it. Then,
/// once that winner is dead, eight more race to take the id over: again exactly
/// one wins, and it alone is handed the dead winner's row.
pub(crate) async fn concurrent_registrations_have_one_winner(db: &TestDb) {
    let other = db.reopen().await;
    let stores = [&db.store, &other];
    let regs = |round: &str| (0..8).map(|i| registration("node-1", &format!("{round}-{i}"), i)).collect::<Vec<_>>();

    let first = race(stores, regs("first"), T0).await;
    assert_eq!(first.winners.len(), 1, "winners: {:?}", first.winners);
    let (winner, previous) = &first.winners[0];
    assert_eq!(previous, &None);
    assert_eq!(first.refused_naming, vec![winner.clone(); 7]);
    let row = db.store.nodes().await.unwrap();
    assert_eq!(row.iter().map(|n| n.incarnation.as_str()).collect::<Vec<_>>(), [winner.as_str()]);

    let dead_row = row[0].clone();
    let second = race(stores, regs("second"), at(15_000)).await;
    assert_eq!(second.winners.len(), 1, "winners: {:?}", second.winners);
    let (new_winner, previous) = &second.winners[0];
    assert_eq!(previous.as_ref(), Some(&dead_row));
    assert_eq!(second.refused_naming, vec![new_winner.clone(); 7]);
    let holders: BTreeSet<String> = db.store.nodes().await.unwrap().into_iter().map(|n| n.incarnation).collect();
    assert_eq!(holders, BTreeSet::from([new_winner.clone()]));
}

/// PostgreSQL reports its own clock (`clock_timestamp()`), which on this machine
/// is within a few seconds of the system clock; SQLite has no clock of its own and
/// reports none.
pub(crate) async fn store_time_is_the_database_clock(db: &TestDb) {
    let store_time = db.store.store_time().await.unwrap();
    match db.store.backend() {
        Backend::Sqlite => assert_eq!(store_time, None),
        Backend::Postgres => {
            let store_ms = store_time.expect("PostgreSQL has a clock").as_millis();
            let system_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
            assert!((store_ms - system_ms).abs() < 5_000, "store clock {store_ms} vs system clock {system_ms}");
            let later = db.store.store_time().await.unwrap().unwrap().as_millis();
            assert!(later >= store_ms, "clock_timestamp() went back: {store_ms} then {later}");
        }
    }
}
