//! A loopback emulator of the Entra ID side of Microsoft for token minting (client credentials and
//! the delegated flows: authorization code + PKCE, refresh, on-behalf-of, device code):
//! v1 and v2 token endpoints, signing keys, OpenID metadata and Entra's error answers, plus a
//! control API to inject faults, rotate credentials and read what clients sent. For the
//! secretless credential it also plays AWS (STS `GetWebIdentityToken`, IAM's federation info,
//! the account's OIDC issuer) and accepts the AWS JWT through federated identity credentials.
//!
//! Used in-process by the demo and Rust tests ([`start`]) and as a process by end-to-end tests
//! (the `defender-emulator` binary). See `README.md` for the scenario format and endpoints.

mod aws;
pub mod browser;
mod control;
mod defender;
pub mod demo;
mod entra;
mod faults;
mod handle;
mod latency;
mod scenario;
mod server;
mod state;

pub use aws::{ShortLivedTokens, StsCallCounts, StsFailure};
pub use defender::{
    ApiCalls, DataApiCalls, DataConfig, DataModes, DefenderSettings, DefenderSettingsPatch,
    HuntingColumn, HuntingConfig, HuntingTruth, MAX_HUNTING_ROWS, RateLimitMode, Retirement,
    TouchWhilePaging,
};
pub use entra::consent::{ConsentDecision, ConsentDecisionRecord, ConsentKind};
pub use entra::delegated::{
    DelegatedTokenRecord, DeviceDecision, DeviceVerdict, MintedUserToken, RefreshTokenCounts,
    UserTokenRequest,
};
pub use entra::request_log::{CredentialKind, Endpoint, TokenRequestRecord};
pub use entra::resources;
pub use faults::{AfterApply, DEFAULT_PARTIAL_WARNING, Fault, FaultMatch};
pub use handle::{ControlError, EmulatorHandle};
pub use latency::{Latency, LatencyRange};
pub use scenario::{
    AppConfig, AwsConfig, CertificateConfig, DelegatedGrantConfig, DelegatedSettings,
    FederatedCredentialConfig, GrantConfig, RequiredPermissionConfig, Scenario, SecretConfig,
    TenantConfig, UserConfig,
};
pub use server::{RunningEmulator, start};
