//! Clients of the daemons' control APIs (contract: README, "Control API").
//! Blocking HTTP: the CLI does one thing at a time and waits for it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One daemon's API: base URL and bearer token.
#[derive(Clone)]
pub struct Endpoint {
    pub base: String,
    token: String,
    agent: ureq::Agent,
}

impl Endpoint {
    pub fn new(base: &str, token: &str) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent,
        }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let req = self.request(method, path);
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let what = format!("{method} {}{path}", self.base);
        match res {
            Ok(r) => r
                .into_json()
                .with_context(|| format!("{what}: unexpected response")),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("error")?.as_str().map(str::to_string))
                    .unwrap_or(text);
                bail!("{what}: {code}: {msg}")
            }
            Err(e) => Err(e).with_context(|| format!("{what}: the daemon is not reachable")),
        }
    }
}

/// A dnsd service as `GET /v1/services` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub addresses: Vec<String>,
    pub ttl: u32,
}

/// The answer to a change: the workspace generation it became.
#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    pub generation: u64,
}

/// One workspace generation as `GET /v1/generations` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerationInfo {
    pub number: u64,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub current: bool,
}

/// dnsd's API.
pub struct Dns(pub Endpoint);

impl Dns {
    pub fn services(&self) -> Result<Vec<Service>> {
        self.0.call("GET", "/v1/services", None)
    }

    pub fn service(&self, name: &str) -> Result<Service> {
        let fqdn = fqdn(name);
        self.services()?
            .into_iter()
            .find(|s| s.name.eq_ignore_ascii_case(&fqdn))
            .with_context(|| {
                format!(
                    "{fqdn} is not a service of dnsd at {} (see `cutover status`)",
                    self.0.base
                )
            })
    }

    pub fn set_service(&self, name: &str, addresses: &[String], ttl: u32) -> Result<u64> {
        let body = serde_json::json!({ "addresses": addresses, "ttl": ttl });
        let c: Change = self
            .0
            .call("PUT", &format!("/v1/services/{}", fqdn(name)), Some(body))?;
        Ok(c.generation)
    }

    pub fn generations(&self) -> Result<Vec<GenerationInfo>> {
        self.0.call("GET", "/v1/generations", None)
    }
}

/// A redirect rule as `GET /v1/rules` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Rule {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// The figures of one rule in `GET /v1/stats`: the part a migration's
/// drain watches.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuleStats {
    pub name: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub new_flows_per_s: f64,
    #[serde(default)]
    pub active_flows: u64,
    #[serde(default)]
    pub distinct_clients: u64,
    #[serde(default)]
    pub new_flows: u64,
}

/// `GET /v1/stats` of a redirector.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Stats {
    #[serde(default)]
    pub rules: Vec<RuleStats>,
}

/// A redirector's API (on the old host, or on the new one for a reverse
/// redirect).
pub struct Redirector(pub Endpoint);

impl Redirector {
    pub fn rules(&self) -> Result<Vec<Rule>> {
        self.0.call("GET", "/v1/rules", None)
    }

    pub fn put_rule(&self, name: &str, from: &str, to: &str) -> Result<u64> {
        let body = serde_json::json!({ "from": from, "to": to });
        let c: Change = self
            .0
            .call("PUT", &format!("/v1/rules/{name}"), Some(body))?;
        Ok(c.generation)
    }

    /// Removes a rule; a rule that is already gone is not an error, so
    /// that a rollback can be repeated.
    pub fn delete_rule(&self, name: &str) -> Result<()> {
        if !self.rules()?.iter().any(|r| r.name == name) {
            return Ok(());
        }
        let _: Change = self.0.call("DELETE", &format!("/v1/rules/{name}"), None)?;
        Ok(())
    }

    pub fn stats(&self) -> Result<Stats> {
        self.0.call("GET", "/v1/stats", None)
    }
}

/// Names are compared and sent fully qualified.
pub fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_ascii_lowercase()
    } else {
        format!("{}.", name.to_ascii_lowercase())
    }
}
