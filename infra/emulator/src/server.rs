//! Routing, start and stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::control;
use crate::entra::consent;
use crate::entra::directory::Directory;
use crate::entra::discovery;
use crate::entra::keys::SigningKey;
use crate::entra::token_endpoint;
use crate::faults;
use crate::handle::EmulatorHandle;
use crate::scenario::Scenario;
use crate::state::Shared;

/// How long [`RunningEmulator::shutdown`] lets open connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A started emulator. Dropping it stops the server too, without waiting for it.
pub struct RunningEmulator {
    handle: EmulatorHandle,
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT` (no trailing slash): the authority to configure clients with.
    pub fn base_url(&self) -> &str {
        self.handle.base_url()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Changes state in-process, without the HTTP control API.
    pub fn handle(&self) -> EmulatorHandle {
        self.handle.clone()
    }

    /// Stops accepting connections and waits (a few seconds at most) for open ones to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            tracing::warn!("connections still open after the grace period; closing them");
            task.abort();
        }
    }
}

/// Starts the emulator on `listen` (port 0: a free port chosen by the OS).
pub async fn start(scenario: Scenario, listen: SocketAddr) -> anyhow::Result<RunningEmulator> {
    scenario.validate()?;
    let (key, aws_rsa_key, aws_ec_key) = tokio::task::spawn_blocking(|| {
        anyhow::Ok((
            SigningKey::generate()?,
            SigningKey::generate()?,
            crate::aws::EcSigningKey::generate()?,
        ))
    })
    .await
    .context("key generation did not finish")??;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local_addr = listener.local_addr()?;
    let base_url = format!("http://{local_addr}");
    // Federated credentials may name the emulator's own issuer, whose port is known only now.
    let mut scenario = scenario;
    for app in &mut scenario.apps {
        crate::entra::federated::resolve_placeholder(&mut app.federated_credentials, &base_url);
    }
    let directory = Directory::from_scenario(&scenario)?;
    let aws = crate::aws::AwsState::new(scenario.aws.clone(), aws_rsa_key, aws_ec_key);
    let issuer_keys = crate::entra::federated::IssuerKeyCache::new()?;
    let shared = Arc::new(Shared::new(base_url, key, directory, aws, issuer_keys));
    shared.defender.load_scenario(&scenario);
    let app = router(Arc::clone(&shared));

    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                // A dropped sender stops the server as well as an explicit stop.
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "emulator server failed");
        }
    });
    tracing::info!(base_url = %shared.base_url, "emulator listening");
    Ok(RunningEmulator {
        handle: EmulatorHandle { shared },
        local_addr,
        stop: Some(stop),
        task: Some(task),
    })
}

fn router(shared: Arc<Shared>) -> Router {
    // Faults apply to the emulated Microsoft endpoints only, never to the control API that
    // clears them.
    let microsoft = Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/token",
            post(token_endpoint::token_v2).fallback(token_endpoint::wrong_method),
        )
        .route(
            "/{tenant}/oauth2/token",
            post(token_endpoint::token_v1).fallback(token_endpoint::wrong_method),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(discovery::keys_v2))
        .route("/{tenant}/discovery/keys", get(discovery::keys_v1))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery::openid_configuration_v2),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(discovery::openid_configuration_v1),
        )
        .merge(consent::pages())
        .merge(crate::entra::delegated::pages())
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            faults::inject,
        ));
    Router::new()
        .merge(microsoft)
        .merge(control::router())
        .merge(consent::control_router())
        .merge(crate::entra::delegated::control_router())
        // The data APIs carry their own fault layer and call counters.
        .merge(crate::defender::router(Arc::clone(&shared)))
        .merge(crate::defender::control_router())
        // AWS has its own switches; Entra's faults do not apply to it.
        .merge(crate::aws::router())
        .fallback(not_found)
        // Microsoft's own time per call, when set (off by default); the control API never waits.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            crate::latency::delay,
        ))
        .with_state(shared)
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(
            json!({ "error": "not_found", "error_description": "The emulator has no such endpoint." }),
        ),
    )
}
