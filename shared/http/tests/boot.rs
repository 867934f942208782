//! Start-up installs the process-wide log subscriber, so it is tested in a
//! process of its own rather than among the unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use taskpilot_config::{ConfigError, Vars};
use taskpilot_http::serve::boot;

#[tokio::test]
async fn boot_hands_back_the_state_built_once_logging_is_installed() {
    let state = boot(&Vars::from_env(), async { Ok::<_, ConfigError>(42) })
        .await
        .unwrap();
    assert_eq!(state, 42);
    assert!(tracing::dispatcher::has_been_set());
}

#[tokio::test]
async fn boot_passes_on_a_configuration_error() {
    let err = boot(&Vars::from_env(), async {
        Err::<u8, _>(ConfigError::Missing("AUTH_ISSUER"))
    })
    .await
    .unwrap_err();
    assert!(matches!(err, ConfigError::Missing("AUTH_ISSUER")));
}

#[test]
fn telemetry_installs_a_global_subscriber() {
    taskpilot_http::telemetry::init(&Vars::from_pairs([("RUST_LOG", "debug")]));
    assert!(tracing::dispatcher::has_been_set());
}
