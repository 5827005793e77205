//! The node's promises under attack (DESIGN §7, "Bounds an operator can rely on"),
//! one test per way they were once broken, each with the real `orch serve` binary,
//! real agents and gates, and a real store.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::deployment::{Deployment, FAST, PASS, alive, kill9, sqlite, terminate};
use common::proxy::FreezableProxy;
use common::{ORCH, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Finding 1: an agent that replaces its verdict file with a FIFO once froze the
/// whole node (a blocking open on a runtime thread). Now its job fails naming
/// the FIFO, another item completes meanwhile, and SIGTERM still stops the node.
#[test]
fn fifo_verdict_fails_its_job_while_another_item_completes_and_sigterm_stops_the_node() {
    let dep = Deployment::new(sqlite(), FAST, "");
    dep.script(
        "agents/developer.sh",
        &format!(
            "case \"$ORCH_ITEM\" in SHOP-1) rm -f \"$ORCH_VERDICT_FILE\"; mkfifo \"$ORCH_VERDICT_FILE\"; exit 0;; esac\n{PASS}"
        ),
    );
    let mut node = dep.serve("node-a", "data-a", &[], "serve.log");
    let hostile = dep.add_item("plants a FIFO");
    let fine = dep.add_item("an honest item");
    wait_until("the honest item to finish", || dep.status(&fine) == "done");
    wait_until("the FIFO verdict to be refused", || {
        dep.events(&hostile).iter().any(|e| {
            e["kind"] == "job.failed"
                && e["reason"].as_str().is_some_and(|r| r.contains("is not a regular file (it is a FIFO)"))
        })
    });
    assert!(terminate(&mut node).success(), "serve exits 0 on SIGTERM: {}", dep.log("serve.log"));
    let log = dep.log("serve.log");
    assert!(log.contains("job.claimed") && !log.contains('\u{1b}'), "plain text, no colour codes, in a file: {log}");
    dep.assert_audit_clean();
}

/// Finding 2: a node died while it ran an edge's gates; the node that took the
/// finalization over could not even start the gate (its data folder had no logs
/// folder) and counted that as a red gate, rolling a good item back. Now the taker
/// prepares its folders, the gate runs, and the item advances with no rollback.
#[test]
fn node_killed_mid_gate_is_finished_by_a_second_node_without_rollback() {
    let edge = "[[edges]]\nfrom = \"development\"\nto = \"testing\"\ngates = [\"slow\"]\non_fail = \"development\"\n\
                [gates.slow]\ncommand = [\"GATES/slow.sh\"]\ntimeout_s = 60\n";
    let dep = Deployment::new(sqlite(), FAST, &edge.replace("GATES", "gates"));
    let pids = dep.path().join("pids");
    // First run (node A's): record the pid and hang; any later run passes at once.
    dep.script(
        "gates/slow.sh",
        &format!(
            "if [ -f {p}/gate ]; then echo 'gate passed'; exit 0; fi\necho $$ > {p}/gate.tmp && mv {p}/gate.tmp {p}/gate\n\
             while :; do sleep 0.05; done",
            p = pids.display()
        ),
    );
    let mut a = dep.serve("node-a", "data-a", &[], "serve-a.log");
    let key = dep.add_item("gated");
    wait_until("node A's gate to start", || pids.join("gate").exists());
    kill9(&mut a);
    let gate_pid = dep.pid_file("gate");
    let _ = kill(Pid::from_raw(gate_pid), Signal::SIGKILL); // it died with its machine

    let mut b = dep.serve("node-b", "data-b", &[], "serve-b.log");
    wait_until("node B to finish the item", || dep.status(&key) == "done");
    assert!(terminate(&mut b).success());
    let events = dep.events(&key);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"reaper.took_over"), "node B took the finalization over: {kinds:?}");
    assert!(!kinds.contains(&"item.rolled_back"), "no rollback: {events:?}");
    assert!(events.iter().any(|e| e["kind"] == "gate.passed"), "the gate ran on node B and passed: {events:?}");
    assert_eq!(dep.item(&key)["attempts"]["development"], 1);
    dep.assert_audit_clean();
}

/// Finding 4: a descendant that daemonizes (`setsid`) escaped its job's process
/// group and lived on. Now it dies with its job, from an agent and from a gate,
/// in each isolation mode the node offers.
fn daemons_die_with_their_job(isolation: &str) {
    let edge = "[[edges]]\nfrom = \"development\"\nto = \"testing\"\ngates = [\"daemon\"]\non_fail = \"development\"\n\
                [gates.daemon]\ncommand = [\"gates/daemon.sh\"]\ntimeout_s = 60\n";
    let dep = Deployment::new(sqlite(), FAST, edge);
    let pids = dep.path().join("pids");
    let spawn_daemon = |name: &str| {
        format!(
            "setsid sh -c 'echo $$ > {p}/{name}.tmp; mv {p}/{name}.tmp {p}/{name}; exec sleep 600' </dev/null >/dev/null 2>&1 &\n\
             while [ ! -f {p}/{name} ]; do sleep 0.01; done",
            p = pids.display()
        )
    };
    dep.script("agents/developer.sh", &format!("{}\n{PASS}", spawn_daemon("agent-daemon")));
    dep.script("gates/daemon.sh", &format!("{}\necho ok", spawn_daemon("gate-daemon")));
    let mut node = dep.serve("node-a", "data-a", &[("ORCH_NODE_ISOLATION", isolation)], "serve.log");
    let key = dep.add_item("daemonizes");
    wait_until("the item to finish", || dep.status(&key) == "done");
    let (agent_daemon, gate_daemon) = (dep.pid_file("agent-daemon"), dep.pid_file("gate-daemon"));
    wait_until("the agent's daemon to die with its job", || !alive(agent_daemon));
    wait_until("the gate's daemon to die with its job", || !alive(gate_daemon));
    assert!(terminate(&mut node).success(), "{}", dep.log("serve.log"));
}

#[test]
fn setsid_daemons_of_an_agent_and_a_gate_die_with_their_job_in_a_cgroup() {
    daemons_die_with_their_job("cgroup");
}

#[test]
fn setsid_daemons_of_an_agent_and_a_gate_die_with_their_job_under_process_groups() {
    daemons_die_with_their_job("process-group");
}

/// Finding 5: an agent that kills its own node was restarted for ever (reconcile
/// released the job without using an attempt). Now each run cut short by the
/// node's death is an attempt, and the item ends blocked after `max_attempts`.
#[test]
fn an_agent_that_kills_its_node_on_every_run_ends_blocked() {
    let dep = Deployment::new(sqlite(), FAST, "");
    let runs = dep.path().join("runs");
    // `orch serve` is the agent's parent (the cgroup wrapper execs the agent).
    dep.script("agents/developer.sh", &format!("echo run >> {}\nkill -9 $PPID\nsleep 30", runs.display()));
    let key = dep.add_item("kills its node");
    let mut restarts = 0;
    while dep.status(&key) != "blocked" {
        restarts += 1;
        assert!(restarts <= 6, "still {} after {restarts} restarts", dep.status(&key));
        let mut node = dep.serve("node-a", "data-a", &[], &format!("serve-{restarts}.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while node.0.try_wait().unwrap().is_none() && dep.status(&key) != "blocked" {
            assert!(Instant::now() < deadline, "node neither died nor blocked the item");
            std::thread::sleep(Duration::from_millis(20));
        }
        if node.0.try_wait().unwrap().is_none() {
            assert!(terminate(&mut node).success());
        }
    }
    let runs = std::fs::read_to_string(&runs).unwrap_or_default().lines().count();
    assert_eq!(runs, 3, "one run per attempt (max_attempts = 3)");
    let events = dep.events(&key);
    let blocked = events.iter().rev().find(|e| e["kind"] == "item.blocked").expect("an item.blocked event");
    assert!(
        events.iter().any(|e| e["reason"].as_str().is_some_and(|r| r.contains("node died during the run"))),
        "the reason names the node's death: {events:?}"
    );
    assert!(blocked["reason"].as_str().is_some_and(|r| !r.is_empty()));
    dep.assert_audit_clean();
}

fn now_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Finding 3: node A lost its store behind a frozen proxy; node B took the job over
/// when the lease expired and started a new agent while A's was still running
/// (A's self-fence waited for a renewal call that never returned). Now A kills its
/// agent by its own timer before the lease can expire, so the two never overlap,
/// and A records `job.fenced_out` with the kill time once it can reach the store.
#[test]
fn frozen_store_connection_self_fences_before_another_node_takes_over() {
    let db = orch_test_support::PgDatabase::create("orch_frozen");
    let reaper = "interval_s = 0.2\nfinalize_grace_s = 1\nmax_running_s = 120\nlease_ttl_s = 2\nheartbeat_s = 0.2\n";
    let dep = Deployment::new(db.url(), reaper, "");
    let pids = dep.path().join("pids");
    // First run: record pid and hang, ignoring TERM. Later runs: record when they
    // started (ns since the epoch) and pass.
    dep.script(
        "agents/developer.sh",
        &format!(
            "if [ -f {p}/agent-a ]; then date +%s%N > {p}/b-start.tmp; mv {p}/b-start.tmp {p}/b-start; {PASS}; exit 0; fi\n\
             trap '' TERM\necho $$ > {p}/agent-a.tmp; mv {p}/agent-a.tmp {p}/agent-a\nwhile :; do sleep 0.05; done",
            p = pids.display()
        ),
    );
    let proxy = FreezableProxy::start();
    let via_proxy = proxy.url_for(db.url());
    let mut a = dep.serve("node-a", "data-a", &[("ORCH_STORE_URL", &via_proxy)], "serve-a.log");
    let key = dep.add_item("frozen store");
    wait_until("node A's agent to run", || pids.join("agent-a").exists());
    let agent_a = dep.pid_file("agent-a");

    proxy.signal(Signal::SIGSTOP);
    let frozen_at = Instant::now();
    let mut b = dep.serve("node-b", "data-b", &[], "serve-b.log");
    // Watch A's agent closely: the moment it dies is what must come first.
    let mut a_died_ns = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pids.join("b-start").exists() {
        assert!(Instant::now() < deadline, "node B never ran the job: {}", dep.log("serve-b.log"));
        if a_died_ns.is_none() && !alive(agent_a) {
            a_died_ns = Some(now_ns());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let b_started_ns: u128 = std::fs::read_to_string(pids.join("b-start")).unwrap().trim().parse().unwrap();
    let a_died_ns = a_died_ns.expect("node A's agent was still alive when node B's started: two agents on one job");
    assert!(a_died_ns < b_started_ns, "A's agent died {} ms after B's started", (a_died_ns - b_started_ns) / 1_000_000);
    assert!(frozen_at.elapsed() < Duration::from_secs(30));

    proxy.signal(Signal::SIGCONT);
    wait_until("the item to finish on node B", || dep.status(&key) == "done");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !dep.events(&key).iter().any(|e| e["kind"] == "job.fenced_out" && e["data"]["node"] == "node-a") {
        assert!(Instant::now() < deadline, "node A never recorded that it was fenced out:\n{}", dep.log("serve-a.log"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = dep.events(&key);
    let fenced = events.iter().find(|e| e["kind"] == "job.fenced_out" && e["data"]["node"] == "node-a").unwrap();
    let killed_at_ms = fenced["data"]["killed_at"].as_i64().expect("job.fenced_out names when A killed its agent");
    assert!(u128::from(killed_at_ms as u64) * 1_000_000 <= b_started_ns + 50_000_000, "{fenced}");
    assert!(terminate(&mut b).success(), "{}", dep.log("serve-b.log"));
    assert!(terminate(&mut a).success(), "{}", dep.log("serve-a.log"));
    dep.assert_audit_clean();
}

/// Finding 7: a second `orch serve` under the id of a live node once released the
/// live node's running job at start-up and ran the stage again. Now it refuses to
/// start, naming the live node, and the first node's job is untouched.
#[test]
fn a_twin_node_id_is_refused_and_the_live_node_keeps_its_job() {
    let dep = Deployment::new(sqlite(), FAST, "");
    let pids = dep.path().join("pids");
    dep.script(
        "agents/developer.sh",
        &format!("echo $$ >> {p}/runs\nwhile [ ! -f {p}/../release ]; do sleep 0.02; done\n{PASS}", p = pids.display()),
    );
    let mut first = dep.serve("twin", "data-a", &[], "serve-a.log");
    let key = dep.add_item("long running");
    wait_until("the first node's agent to run", || pids.join("runs").exists());
    let job_before = dep.events(&key).iter().filter(|e| e["kind"] == "job.started").count();

    let mut twin = dep.serve("twin", "data-b", &[], "serve-b.log");
    let status = twin.0.wait().unwrap();
    assert!(!status.success(), "the twin must refuse to start");
    let log = dep.log("serve-b.log");
    assert!(log.contains("node id twin is in use by a live node"), "the refusal names the live node: {log}");
    assert!(log.contains(&format!("pid {}", first.0.id())), "and its pid: {log}");

    let events = dep.events(&key);
    assert!(!events.iter().any(|e| e["kind"] == "job.released"), "the live job was not released: {events:?}");
    assert_eq!(events.iter().filter(|e| e["kind"] == "job.started").count(), job_before);
    std::fs::write(dep.path().join("release"), "").unwrap();
    wait_until("the first node to finish the item", || dep.status(&key) == "done");
    assert_eq!(std::fs::read_to_string(pids.join("runs")).unwrap().lines().count(), 1, "the stage ran once");
    assert!(terminate(&mut first).success());
    dep.assert_audit_clean();
}

/// Finding 6: leases were stamped with the owner's clock and judged with the
/// reaper's, so a node whose clock ran 25 s ahead took a healthy job over from
/// another node. Now both stamp and judge in the store's time: the skewed node
/// measures its offset and takes nothing over.
#[test]
fn a_node_with_a_clock_25_s_ahead_takes_nothing_over() {
    let libfaketime = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libfaketime is needed for this test (Debian package faketime; scripts/test installs it)");
    let db = orch_test_support::PgDatabase::create("orch_skew");
    let reaper = "interval_s = 0.2\nfinalize_grace_s = 1\nmax_running_s = 120\nlease_ttl_s = 2\nheartbeat_s = 0.2\n";
    let dep = Deployment::new(db.url(), reaper, "[[repos]]\nname = \"idle\"\nkey = \"IDLE\"\npath = \".\"\n");
    let pids = dep.path().join("pids");
    dep.script(
        "agents/developer.sh",
        &format!("echo $$ >> {p}/runs\nwhile [ ! -f {p}/../release ]; do sleep 0.02; done\n{PASS}", p = pids.display()),
    );
    let mut honest = dep.serve("honest", "data-a", &[], "serve-a.log");
    let key = dep.add_item("healthy work");
    wait_until("the honest node's agent to run", || pids.join("runs").exists());

    let mut skewed = Command::new(ORCH);
    skewed
        .env("LD_PRELOAD", libfaketime)
        .env("FAKETIME", "+25s")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_NO_CACHE", "1");
    let mut ahead = dep.serve_with(skewed, "ahead", "data-b", &[("RUST_LOG", "info")], "serve-b.log");
    // The skewed node has measured its offset once it has registered; then give
    // its reaper many passes (each 0.2 s) over the healthy job's lease.
    wait_until("the skewed node to register with its offset", || {
        let out = dep.orch(&["queue", "--json"]);
        let q: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        q["nodes"].as_array().is_some_and(|nodes| {
            nodes.iter().any(|n| n["id"] == "ahead" && n["clock_offset_ms"].as_i64().is_some_and(|o| o < -20_000))
        })
    });
    let passes_seen = Instant::now();
    wait_until("ten reaper intervals to pass on the skewed node", || passes_seen.elapsed() > Duration::from_secs(2));
    let events = dep.events(&key);
    assert!(!events.iter().any(|e| e["kind"] == "reaper.took_over"), "the skewed node took healthy work: {events:?}");
    assert_eq!(std::fs::read_to_string(pids.join("runs")).unwrap().lines().count(), 1, "the stage ran once");
    std::fs::write(dep.path().join("release"), "").unwrap();
    wait_until("the honest node to finish the item", || dep.status(&key) == "done");
    assert!(terminate(&mut ahead).success(), "{}", dep.log("serve-b.log"));
    assert!(terminate(&mut honest).success());
    dep.assert_audit_clean();
}

/// `orch logs` reads a file the agent can replace: a FIFO planted there gets a
/// clear error at once instead of a reader that blocks for ever.
#[test]
fn orch_logs_refuses_a_planted_fifo_instead_of_hanging() {
    let dep = Deployment::new(sqlite(), FAST, "");
    let mut node = dep.serve("node-a", "data-a", &[], "serve.log");
    let key = dep.add_item("logs");
    wait_until("the item to finish", || dep.status(&key) == "done");
    assert!(terminate(&mut node).success());
    let log = dep.path().join("data-a/logs/job-1.log");
    std::fs::remove_file(&log).unwrap();
    nix::unistd::mkfifo(&log, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let mut child = Command::new(ORCH)
        .args(["logs", "1"])
        .current_dir(dep.path())
        .env_remove("ORCH_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("orch logs hung on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("not a regular file (it is a FIFO)"), "{err}");
}
