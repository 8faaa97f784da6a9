//! The store-generic checks: end to end through a real axum `Router`
//! (`support::app`), one `async fn` per check taking the store, grouped by
//! topic. Each backend's test binary stamps all of them out, with the
//! crate's conformance suite, by [`store_tests!`].
//!
//! The list in `store_tests!` is the only list of checks. A check missing
//! from it is never called, which the compiler reports as dead code (the
//! harness allows none), and a name in it that is no check does not
//! compile.

pub(crate) mod cookies;
pub(crate) mod credentials;
#[cfg(feature = "csrf")]
pub(crate) mod csrf;
pub(crate) mod device_races;
pub(crate) mod devices;
pub(crate) mod end_all;
pub(crate) mod expiry;
pub(crate) mod failures;
pub(crate) mod identity_provider;
pub(crate) mod lifecycle;
pub(crate) mod pages;
pub(crate) mod races;
pub(crate) mod rotation_failures;
pub(crate) mod security_events;
pub(crate) mod streams;
pub(crate) mod writes;

use crate::support::reply::Reply;

/// Stamps out the whole store-generic suite for one store: the crate's
/// conformance suite (`conformance::...`), and one test per check, in a
/// module per topic (`cookies::...`, `races::...`).
///
/// The argument evaluates to an `Option` of a store, inside the test (so it
/// may `.await`), once per test. Paths in it must be absolute
/// (`crate::...`): it is evaluated inside the generated modules.
///
/// Two forms, one list:
///
/// - `store_tests!(make_store)`, for libtest's own harness (the binaries
///   of stores that need nothing installed): a `#[test]` per check, in
///   which `None` skips.
/// - `store_tests!(needs BACKEND; make_store)`, for `support::harness`
///   (the binaries of stores that need a server): a `fn` per check, and
///   `fn tests()`, beside the invocation, listing them all, each needing
///   `BACKEND` (a `&'static support::harness::Backend`), so that they are
///   reported ignored when it is missing.
///
/// A topic that needs a crate feature beyond what every binary has names
/// it after its name (`csrf if "csrf" [...]`): without the feature, its
/// module and its tests are left out.
///
/// The checks of a topic run on the runtime its attribute gives: the races
/// on four worker threads, the rest on one thread (which captures the logs
/// of its own test only; see `support::logs`). For `support::harness`, the
/// attribute becomes `#[tokio::main]` with the same runtime.
macro_rules! store_tests {
    ($make_store:expr) => {
        $crate::checks::store_tests!(@suite [libtest] $make_store);
    };
    (needs $backend:expr; $make_store:expr) => {
        $crate::checks::store_tests!(@suite [harness $backend] $make_store);
    };
    (@suite $harness:tt $make_store:expr) => {
        $crate::checks::store_tests!(@topics $harness $make_store;
            #[tokio::test]
            cookies [
                cookie_attributes_are_safe_by_default,
                configured_attributes_reach_the_cookie,
                host_prefix_cookie_is_named_and_scoped_for_it,
                junk_cookies_are_anonymous_and_cost_no_store_call,
                a_valid_cookie_among_junk_duplicates_still_counts,
                key_rotation_keeps_sessions_until_the_old_key_leaves_the_ring,
                handler_cache_policy_is_kept,
                a_publicly_cacheable_response_never_carries_a_session_cookie,
            ],
            #[tokio::test]
            writes [
                a_request_that_ignores_its_session_costs_nothing,
                reading_a_new_session_stores_nothing_and_sets_no_cookie,
                first_write_creates_the_session_and_later_requests_write_only_changes,
                a_blind_write_is_one_save_and_no_load,
                a_blind_write_rolls_the_idle_deadline,
                a_blind_write_to_a_dead_session_starts_a_new_one,
                a_blind_write_with_a_cookie_that_moved_leaves_the_new_cookie_alone,
                writes_before_a_read_are_seen_by_that_read,
                removals_and_clears_are_saved,
                take_removes_what_it_returns_and_get_value_shows_the_json,
                expires_at_is_the_idle_deadline_of_a_stored_session,
                concurrent_requests_changing_different_keys_both_survive,
                a_write_racing_a_logout_does_not_resurrect_the_session,
                an_id_collision_on_create_is_retried,
            ],
            #[tokio::test]
            lifecycle [
                login_rotates_the_id_and_deletes_the_old_one,
                writes_made_before_login_in_the_same_request_are_kept,
                a_planted_session_cookie_is_not_kept_through_login,
                a_dead_cookie_is_replaced_never_reused,
                login_as_another_user_drops_the_previous_users_data,
                login_can_keep_only_the_keys_it_expects,
                regenerate_keeps_data_and_user_under_a_new_id,
                invalidate_expires_the_cookie_and_the_old_cookie_is_anonymous,
                logout_everywhere_ends_the_users_sessions_on_every_device,
                logout_other_devices_keeps_the_current_session,
                listing_marks_the_current_session,
                a_stale_cookie_never_clears_a_newer_login,
                regenerate_after_a_logout_elsewhere_does_not_revive_the_session,
            ],
            #[tokio::test]
            streams [
                a_stream_ends_when_its_session_logs_out_on_another_instance,
                a_stream_ends_on_logout_everywhere_from_another_session,
                a_stream_ends_when_another_device_signs_it_out,
                a_stream_ends_when_an_operator_ends_its_session,
                a_stream_ends_when_its_session_moves_to_a_new_id,
                a_stream_ends_at_its_idle_deadline_and_is_no_activity,
                a_stream_whose_session_lives_on_stays_open,
                a_thousand_streams_of_one_user_all_end_on_logout_everywhere,
                a_stream_ends_when_its_credential_changes_elsewhere,
                activity_the_app_reports_on_a_watch_keeps_its_session_alive,
                two_streams_of_one_session_close_apart,
                a_stream_ends_when_every_session_is_ended,
                a_visitor_without_a_login_gets_no_stream,
            ],
            #[tokio::test]
            credentials [
                a_password_change_keeps_this_session_and_ends_the_others_at_once,
                a_credential_changed_elsewhere_ends_each_session_at_its_next_load,
                a_deleted_account_ends_its_sessions_even_when_the_name_returns,
                a_login_that_did_not_bind_its_session_is_ended_for_a_user_with_a_credential,
                a_sensitive_route_wants_a_password_confirmed_within_the_window,
            ],
            #[tokio::test]
            csrf if "csrf" [
                tokens_are_bound_to_their_session_and_forged_ones_are_refused,
                masked_tokens_differ_per_response_and_all_verify,
                asking_for_a_token_creates_no_session_and_sets_no_cookie,
                the_token_rotates_on_login_and_regenerate,
                an_anonymous_token_counts_only_for_a_visitor_without_a_session,
                another_visitors_anonymous_token_cannot_touch_an_anonymous_session_with_data,
                tokens_rendered_at_once_right_after_login_all_work,
                a_token_rendered_with_the_write_that_creates_the_session_works,
                a_token_extracted_before_the_handler_creates_the_session_verifies,
                a_token_extracted_before_a_login_verifies_after_it,
                the_token_is_no_session_data_and_survives_clear,
                a_store_outage_during_the_check_answers_503,
                a_multipart_form_with_the_token_first_reaches_the_handler_byte_for_byte,
                a_multipart_form_with_a_missing_or_wrong_token_is_refused,
                a_token_issued_while_another_tab_logs_out_is_refused_and_revives_nothing,
                a_token_issued_while_the_user_is_logged_out_everywhere_revives_nothing,
                a_token_issued_before_a_write_that_lost_to_logout_everywhere_revives_nothing,
                a_token_rendered_by_a_login_that_lost_to_logout_everywhere_is_refused,
            ],
            #[tokio::test]
            devices [
                a_login_records_the_device_and_the_listing_shows_it,
                devices_are_recorded_only_as_configured,
                axum_connect_info_gives_the_address_and_a_missing_peer_is_warned_once,
                the_listing_puts_the_latest_activity_first_and_marks_this_session,
                a_user_ends_another_of_their_sessions_by_its_handle,
                handles_of_other_users_or_none_are_refused_alike,
                a_malformed_handle_answers_as_an_unknown_one_and_names_nothing_internal,
                ending_this_session_by_its_handle_logs_out,
                an_admin_made_from_the_store_alone_manages_the_apps_sessions,
            ],
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            device_races [
                ending_a_device_while_it_regenerates_leaves_it_ended,
                ending_a_device_that_moves_follows_it_while_the_old_id_leads_there,
                ending_a_device_that_logs_in_as_another_user_meanwhile_ends_nothing,
                ending_a_device_racing_logout_everywhere_leaves_no_session,
                a_store_failure_while_ending_a_device_ends_nothing_and_can_be_retried,
                a_dropped_request_ending_a_device_leaves_it_live_or_ended,
            ],
            #[tokio::test]
            pages [
                a_flash_is_shown_once_on_the_next_page,
                pages_without_flashes_write_nothing,
                a_page_takes_its_flashes_in_one_extractor_argument,
                flashes_survive_login_and_logout_into_the_next_page,
                a_page_needing_a_user_sends_browsers_to_login_and_apis_a_401,
                a_router_behind_the_login_guard_answers_as_the_extractors_do,
                the_current_user_is_loaded_once_per_request_and_gone_users_are_logged_out,
                the_app_renders_login_required_and_session_errors_itself,
            ],
            #[tokio::test]
            expiry [
                idle_timeout_ends_an_unused_session,
                activity_keeps_a_session_alive_until_the_absolute_timeout,
                rolling_expiry_writes_only_after_the_touch_threshold,
                remember_me_rolls_its_own_idle_window_until_its_lifetime_ends,
                remember_me_asked_before_login_is_kept_through_it,
                remember_me_without_a_login_changes_no_lifetime,
                persistent_cookie_is_refreshed_only_when_the_deadline_moves,
            ],
            #[tokio::test]
            failures [
                store_outage_answers_503_and_service_recovers,
                a_failed_commit_replaces_the_response_with_503,
                a_store_failure_drops_blind_writes_too,
                a_handler_ignoring_a_store_failure_still_gets_503_for_pending_changes,
                data_no_store_can_hold_answers_400_and_writes_nothing,
                public_pages_that_opt_in_see_anonymous_during_an_outage_and_protected_pages_fail_closed,
            ],
            #[tokio::test]
            end_all [
                ending_all_sessions_logs_out_every_browser_of_every_user,
                a_regenerate_held_between_its_new_record_and_the_retire_leaves_no_session,
                logouts_racing_the_end_of_all_sessions_leave_nothing,
                a_store_failure_while_ending_all_sessions_is_reported_and_a_retry_ends_all,
            ],
            #[tokio::test]
            security_events [
                security_events_never_show_the_session_id,
                evictions_and_dropped_saves_are_reported_once_with_their_counts,
            ],
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            races [
                two_hundred_concurrent_writers_to_one_session_lose_nothing,
                a_logout_racing_two_hundred_writes_leaves_the_session_gone_for_good,
                logout_everywhere_racing_logins_leaves_no_earlier_session_and_an_exact_index,
                logout_everywhere_racing_regenerates_leaves_nobody_logged_in,
                ending_all_sessions_racing_regenerates_and_logins_leaves_only_the_later_logins,
                regenerate_racing_logout_everywhere_leaves_no_session,
                regenerate_racing_an_admin_logout_everywhere_leaves_no_session,
                regenerate_racing_a_logout_in_another_tab_leaves_no_session,
                a_logout_that_loaded_the_session_before_a_regenerate_ends_the_new_id_too,
                login_racing_logout_everywhere_leaves_no_session,
                remember_me_racing_a_logout_does_not_revive_the_session,
                logout_everywhere_between_the_new_record_and_the_retire_leaves_no_session,
                logout_everywhere_that_loaded_the_session_before_a_login_as_another_user_ends_it,
                a_logout_everywhere_with_a_moved_cookie_ends_only_that_session,
                the_session_limit_evicts_the_least_recently_active,
                the_session_limit_holds_through_bursts_of_logins_in_one_second,
                a_failed_limit_check_keeps_the_login_and_the_next_login_trims,
                a_login_in_flight_is_the_one_session_over_the_limit_until_its_check,
            ],
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            identity_provider [
                a_login_with_its_own_deadline_ends_at_that_deadline,
                remember_me_and_regenerate_do_not_extend_a_logins_deadline,
                a_second_login_in_the_same_request_keeps_the_deadline,
                a_deadline_later_than_the_layers_changes_nothing,
                a_deadline_set_after_the_login_only_ever_shortens_the_session,
                a_deadline_needs_a_user_and_one_already_passed_logs_out,
                ending_an_external_session_ends_exactly_the_linked_sessions_of_that_user,
                ending_an_external_session_racing_a_regenerate_leaves_no_session,
                ending_an_external_session_racing_a_login_leaves_no_session,
                an_external_logout_that_listed_a_session_before_it_moved_ends_it_at_its_new_id,
                an_external_logout_that_read_a_session_before_it_moved_ends_it_at_its_new_id,
            ],
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            rotation_failures [
                a_store_failure_at_each_rotation_step_leaves_exactly_the_old_session,
                a_failed_cleanup_leaves_the_extra_session_within_reach_of_logout_everywhere,
                store_calls_that_land_but_report_failure_never_leave_the_user_without_a_session,
                a_request_dropped_at_each_rotation_step_leaves_exactly_one_session,
                a_take_back_racing_logout_everywhere_leaves_no_session,
                a_take_back_racing_a_logout_along_the_forward_leaves_no_session,
                failed_logouts_change_nothing_and_can_be_retried,
                a_logout_that_failed_halfway_along_a_forward_can_be_retried,
            ],
        );
    };
    (@topics [libtest] $make_store:expr;
        $(#$test:tt $topic:ident $(if $feature:literal)? [$($check:ident),* $(,)?]),* $(,)?) => {
        mod conformance {
            cloakroom::store_conformance_tests!(optional: $make_store);
        }

        $(
            $(#[cfg(feature = $feature)])?
            mod $topic {
                $(
                    #$test
                    async fn $check() {
                        match $make_store {
                            Some(store) => $crate::checks::$topic::$check(store).await,
                            None => eprintln!("skipped {}: store not available", stringify!($check)),
                        }
                    }
                )*
            }
        )*
    };
    (@topics [harness $backend:expr] $make_store:expr;
        $(#$test:tt $topic:ident $(if $feature:literal)? [$($check:ident),* $(,)?]),* $(,)?) => {
        mod conformance {
            cloakroom::store_conformance_tests!(
                harness: $crate::checks::store_tests!(@store $make_store)
            );

            pub(super) fn tests() -> Vec<$crate::support::harness::Test> {
                let test = |(name, run): &(&str, fn())| {
                    $crate::support::harness::Test::new(module_path!(), name, Some($backend), *run)
                };
                CHECKS.iter().map(test).collect()
            }
        }

        $(
            $(#[cfg(feature = $feature)])?
            mod $topic {
                $(
                    $crate::checks::store_tests!(@runtime $test
                        async fn $check() {
                            let store = $crate::checks::store_tests!(@store $make_store);
                            $crate::checks::$topic::$check(store).await;
                        }
                    );
                )*

                pub(super) fn tests() -> Vec<$crate::support::harness::Test> {
                    $crate::support::harness::tests!(Some($backend) => [$($check),*])
                }
            }
        )*

        /// Every test above, for `support::harness::main`.
        pub(crate) fn tests() -> Vec<$crate::support::harness::Test> {
            let mut tests = conformance::tests();
            $(
                $(#[cfg(feature = $feature)])?
                tests.extend($topic::tests());
            )*
            tests
        }
    };
    // The store, where `support::harness` runs the test only when its
    // backend is there (or fails it before): `None` is a failure.
    (@store $make_store:expr) => {
        match $make_store {
            Some(store) => store,
            None => panic!("the store's backend is unavailable"),
        }
    };
    // `#[tokio::test]`'s runtime for a plain function, which is what
    // `support::harness` runs.
    (@runtime [tokio::test] $function:item) => {
        #[tokio::main(flavor = "current_thread")]
        $function
    };
    (@runtime [tokio::test($($runtime:tt)*)] $function:item) => {
        #[tokio::main($($runtime)*)]
        $function
    };
}
pub(crate) use store_tests;

/// The session cookie a reply sets.
fn cookie_of(reply: &Reply) -> cookie::Cookie<'static> {
    let text = reply.set_cookie().expect("a Set-Cookie header");
    cookie::Cookie::parse(text).expect("valid Set-Cookie")
}

/// The store key (hex) of the session a client's cookie names.
fn store_key_of(client: &crate::support::client::Client) -> String {
    let cookie = client.cookie.as_deref().expect("a session cookie");
    cloakroom::KeyRing::new(crate::support::app::key(1))
        .verify(cookie)
        .expect("a cookie signed by the test app's key")
        .store_key()
        .to_hex()
}

/// Whether a reply removes the session cookie.
fn is_removal(reply: &Reply) -> bool {
    reply.set_cookie().is_some_and(|text| {
        let c = cookie::Cookie::parse(text).expect("valid Set-Cookie");
        c.value().is_empty() && c.max_age() == Some(time::Duration::ZERO)
    })
}
