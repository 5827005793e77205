//! The store conformance suite: every spec in `specs` (and the durability and
//! schema specs) runs once against SQLite and once against PostgreSQL, each on a
//! fresh database, so both backends are held to one behaviour.
//!
//! PostgreSQL tests use `ORCH_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) as an admin URL to create their own
//! database (`orch_test_support::PgDatabase`, dropped when the test ends, pass or
//! fail); an unreachable server fails the test, naming the URL.

mod bad_input;
mod durability;
mod event_stream;
mod group_commit;
mod handoff;
mod migrations;
mod nodes;
mod pg_only;
mod specs;
mod support;
mod usage;
mod vcs;

/// Instantiates `sqlite::<spec>` and `postgres::<spec>` for each spec path.
macro_rules! conformance {
    ($($name:ident => $spec:path),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::support::TestDb::sqlite().await;
                    $spec(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = crate::support::TestDb::postgres().await;
                    $spec(&db).await;
                }
            )*
        }
    };
}

conformance! {
    events_after_pages_resumes_and_filters => crate::event_stream::events_after_pages_resumes_and_filters,
    tailing_reader_gets_every_event_once_under_16_writers =>
        crate::event_stream::tailing_reader_gets_every_event_once_under_16_writers,
    reaper_totals_add_up_and_survive_reopen => crate::event_stream::reaper_totals_add_up_and_survive_reopen,
    create_item_queues_first_job => crate::specs::create_item_queues_first_job,
    keys_unique_and_gap_free_under_concurrency => crate::specs::keys_unique_and_gap_free_under_concurrency,
    keys_gap_free_across_two_opens => crate::specs::keys_gap_free_across_two_opens,
    concurrent_claims_take_each_job_once => crate::specs::concurrent_claims_take_each_job_once,
    claim_takes_oldest_first_and_sets_lease => crate::specs::claim_takes_oldest_first_and_sets_lease,
    stale_epoch_writes_are_fenced_out => crate::specs::stale_epoch_writes_are_fenced_out,
    commit_from_stale_version_conflicts => crate::specs::commit_from_stale_version_conflicts,
    lease_expiry_and_take_over => crate::specs::lease_expiry_and_take_over,
    take_over_race_has_one_winner => crate::specs::take_over_race_has_one_winner,
    events_are_ordered_and_filled => crate::specs::events_are_ordered_and_filled,
    commit_with_enqueue_creates_next_job => crate::specs::commit_with_enqueue_creates_next_job,
    cancel_active_jobs_cancels_and_fences => crate::specs::cancel_active_jobs_cancels_and_fences,
    release_job_requeues => crate::specs::release_job_requeues,
    reaper_queries_respect_boundaries => crate::specs::reaper_queries_respect_boundaries,
    queue_stats_counts => crate::specs::queue_stats_counts,
    queue_stats_agree_with_a_full_count => crate::specs::queue_stats_agree_with_a_full_count,
    list_items_filters_and_pages => crate::specs::list_items_filters_and_pages,
    set_branch_records_branch => crate::specs::set_branch_records_branch,
    renew_leases_reports_renewed_ids => crate::specs::renew_leases_reports_renewed_ids,
    refuses_invalid_requests => crate::specs::refuses_invalid_requests,
    register_node_on_empty_table => crate::nodes::register_node_on_empty_table,
    live_node_id_is_refused_naming_it => crate::nodes::live_node_id_is_refused_naming_it,
    expired_node_id_is_taken_over => crate::nodes::expired_node_id_is_taken_over,
    deregistered_node_id_is_free_at_once => crate::nodes::deregistered_node_id_is_free_at_once,
    touch_node_refuses_superseded_incarnation => crate::nodes::touch_node_refuses_superseded_incarnation,
    concurrent_registrations_have_one_winner => crate::nodes::concurrent_registrations_have_one_winner,
    store_time_is_the_database_clock => crate::nodes::store_time_is_the_database_clock,
    record_push_sets_branch_and_head_sha => crate::vcs::record_push_sets_branch_and_head_sha,
    record_push_is_fenced_by_epoch => crate::vcs::record_push_is_fenced_by_epoch,
    open_pr_is_idempotent => crate::vcs::open_pr_is_idempotent,
    update_pr_applies_set_fields => crate::vcs::update_pr_applies_set_fields,
    merged_pr_never_reopens => crate::vcs::merged_pr_never_reopens,
    list_prs_filters_and_orders => crate::vcs::list_prs_filters_and_orders,
    find_pr_by_branch_finds_the_items_pr => crate::vcs::find_pr_by_branch_finds_the_items_pr,
    gate_results_keep_their_sha => crate::vcs::gate_results_keep_their_sha,
    concurrent_checks_are_all_kept => crate::vcs::concurrent_checks_are_all_kept,
    one_write_handoff_records_the_run_and_claims_the_next_job =>
        crate::handoff::one_write_handoff_records_the_run_and_claims_the_next_job,
    fenced_or_conflicting_handoff_writes_nothing => crate::handoff::fenced_or_conflicting_handoff_writes_nothing,
    handoff_without_claim_queues_and_bad_claims_are_refused =>
        crate::handoff::handoff_without_claim_queues_and_bad_claims_are_refused,
    usage_is_recorded_with_the_exit_and_fenced => crate::usage::usage_is_recorded_with_the_exit_and_fenced,
    acknowledged_items_survive_kill_9 => crate::durability::acknowledged_items_survive_kill_9,
    newer_schema_is_refused => crate::bad_input::newer_schema_is_refused,
    reopening_keeps_data => crate::bad_input::reopening_keeps_data,
}
