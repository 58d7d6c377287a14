//! The flags of a key's policy, shared by `keys create` and `keys set`: each maps onto the
//! control plane's [`PolicyChanges`], which checks them as it checks the management API's members.

use tollgate::admin::service::{EndUserLimitChanges, PolicyChanges};

/// A key's policy on the command line.
#[derive(clap::Args, Default)]
pub struct PolicyArgs {
    /// A browser origin a publishable key is accepted from (repeat for more): `https://app.example.com`
    /// or `https://*.example.com`
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// A network (CIDR) or address the key may be used from (repeat for more) [default: anywhere]
    #[arg(long = "ip-allow", value_name = "CIDR")]
    ip_allowlist: Vec<String>,
    /// Let a secret key be used from a browser (with an Origin header)
    #[arg(long)]
    allow_browser: bool,
    /// Let the key call providers with the server's own credential (`key_env`), without X-Provider-Key
    #[arg(long)]
    server_credential: bool,
    /// Require an identity token naming the end user on every request
    #[arg(long)]
    require_identity: bool,
    /// The most output tokens one request may ask for
    #[arg(long, value_name = "N")]
    max_output_tokens: Option<u64>,
    /// Requests per minute of each end user
    #[arg(long, value_name = "N")]
    end_user_rpm: Option<u64>,
    /// Requests per UTC day of each end user
    #[arg(long, value_name = "N")]
    end_user_daily: Option<u64>,
    /// Tokens per month of each end user
    #[arg(long, value_name = "N")]
    end_user_tokens_per_month: Option<u64>,
}

impl PolicyArgs {
    /// The flags given; flags not given leave a setting as it is.
    pub fn changes(&self) -> PolicyChanges {
        let list = |l: &Vec<String>| (!l.is_empty()).then(|| Some(l.clone()));
        let flag = |on: bool| on.then_some(true);
        PolicyChanges {
            enabled: None,
            ip_allowlist: list(&self.ip_allowlist),
            allowed_origins: list(&self.allowed_origins),
            allow_browser: flag(self.allow_browser),
            provider_credential: self.server_credential.then(|| "server".to_owned()),
            require_identity: flag(self.require_identity),
            end_user_limits: EndUserLimitChanges {
                requests_per_minute: self.end_user_rpm.map(Some),
                requests_per_day: self.end_user_daily.map(Some),
                tokens_per_month: self.end_user_tokens_per_month.map(Some),
            },
            max_output_tokens: self.max_output_tokens.map(Some),
        }
    }
}
