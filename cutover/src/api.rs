//! Clients of the daemons' control APIs (contract: README, "Control API").
//! Blocking HTTP: the CLI does one thing at a time and waits for it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use cutover_control_api::attribution;
use cutover_control_api::contract::{
    Change, ErrorBody, GenerationInfo, MigrationReport, ProbeReport, ProbeRequest, RuleChange,
    ServiceChange,
};
pub use cutover_control_api::contract::{Rule, Service, Stats, ZoneInfo, fqdn};
use serde::de::DeserializeOwned;

/// One daemon's API: base URL and bearer token.
#[derive(Clone)]
pub struct Endpoint {
    pub base: String,
    token: String,
    /// Where the token came from ("the file F", "CUTOVER_TOKEN"), for a 401.
    token_source: String,
    agent: ureq::Agent,
    /// Who asks, and why: recorded in the generations changes make.
    by: Option<String>,
    reason: Option<String>,
}

impl Endpoint {
    pub fn new(base: &str, token: &str, token_source: &str) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            token_source: token_source.to_string(),
            agent,
            by: None,
            reason: None,
        }
    }

    /// This endpoint, telling the daemon who asks and why with each request.
    pub fn attributed(mut self, by: String, reason: Option<String>) -> Self {
        self.by = Some(by);
        self.reason = reason;
        self
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut req = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token));
        if let Some(by) = &self.by {
            req = req.set(attribution::BY_HEADER, by);
        }
        if let Some(reason) = &self.reason {
            req = req.set(attribution::REASON_HEADER, reason);
        }
        req
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let what = format!("{method} {}{path}", self.base);
        self.send(method, path, body)?
            .into_json()
            .with_context(|| format!("{what}: unexpected response"))
    }

    /// The response of a request that succeeded, or the error it got.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<ureq::Response> {
        let req = self.request(method, path);
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let what = format!("{method} {}{path}", self.base);
        match res {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<ErrorBody>(&text)
                    .map(|b| b.error)
                    .unwrap_or(text);
                if code == 401 {
                    bail!(
                        "{what}: 401: {msg}; cutover sent the token from {}",
                        self.token_source
                    )
                }
                bail!("{what}: {code}: {msg}")
            }
            Err(e) => Err(e).with_context(|| format!("{what}: the daemon is not reachable")),
        }
    }
}

/// dnsd's API.
pub struct Dns(pub Endpoint);

impl Dns {
    pub fn services(&self) -> Result<Vec<Service>> {
        self.0.call("GET", "/v1/services", None)
    }

    /// The zone that holds `name`: the served zone whose origin is its
    /// longest suffix.
    pub fn zone_of(&self, name: &str) -> Result<ZoneInfo> {
        let fqdn = fqdn(name).to_ascii_lowercase();
        self.zones()?
            .into_iter()
            .filter(|z| {
                let origin = z.origin.to_ascii_lowercase();
                fqdn == origin || fqdn.ends_with(&format!(".{origin}")) || origin == "."
            })
            .max_by_key(|z| z.origin.len())
            .with_context(|| format!("no zone of dnsd at {} holds {fqdn}", self.0.base))
    }

    /// Every zone dnsd serves, with its name servers and secondaries.
    pub fn zones(&self) -> Result<Vec<ZoneInfo>> {
        self.0.call("GET", "/v1/zones", None)
    }

    /// Tells dnsd where a migration stands, with its latest drain sample,
    /// for the status page.
    pub fn report_migration(&self, name: &str, report: &MigrationReport) -> Result<()> {
        let path = format!("/v1/migrations/{}", fqdn(name));
        self.0
            .send("PUT", &path, Some(serde_json::to_value(report)?))
            .map(|_| ())
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

    /// Sets a service's addresses and TTL; the generation that serves them.
    pub fn set_service(&self, name: &str, addresses: &[String], ttl: u32) -> Result<Option<u64>> {
        let body = ServiceChange {
            addresses: addresses.to_vec(),
            ttl: Some(ttl),
            weights: None,
            backups: None,
        };
        self.put_service(name, &body)
    }

    /// Sets a service's addresses to those of `weights`, in that order,
    /// with those weights, `backups` being exactly its backups; the
    /// generation that serves them.
    pub fn set_weights(
        &self,
        name: &str,
        weights: &[(String, u32)],
        backups: &[String],
    ) -> Result<Option<u64>> {
        let body = ServiceChange {
            addresses: weights.iter().map(|(a, _)| a.clone()).collect(),
            ttl: None,
            weights: Some(weights.iter().cloned().collect()),
            backups: Some(backups.to_vec()),
        };
        self.put_service(name, &body)
    }

    fn put_service(&self, name: &str, body: &ServiceChange) -> Result<Option<u64>> {
        let c: Change = self.0.call(
            "PUT",
            &format!("/v1/services/{}", fqdn(name)),
            Some(json(body)?),
        )?;
        Ok(c.generation)
    }

    pub fn generations(&self) -> Result<Vec<GenerationInfo>> {
        self.0.call("GET", "/v1/generations", None)
    }
}

/// A redirector's API (on the old host, or on the new one for a reverse
/// redirect).
pub struct Redirector(pub Endpoint);

impl Redirector {
    pub fn rules(&self) -> Result<Vec<Rule>> {
        self.0.call("GET", "/v1/rules", None)
    }

    /// Adds or replaces a rule; the generation that holds it.
    /// `proto`: none means TCP; `share`: the percentage of clients
    /// redirected, none for all.
    pub fn put_rule(
        &self,
        name: &str,
        from: &str,
        to: &str,
        proto: &[cutover_control_api::contract::Proto],
        share: Option<u8>,
    ) -> Result<Option<u64>> {
        let body = RuleChange {
            from: from.to_string(),
            to: to.to_string(),
            ports: Vec::new(),
            proto: proto.to_vec(),
            share,
        };
        let c: Change = self
            .0
            .call("PUT", &format!("/v1/rules/{name}"), Some(json(&body)?))?;
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

    /// Whether this redirector's host can connect to `to` (`IP:PORT`),
    /// from address `from` if given.
    pub fn probe(&self, to: &str, from: Option<&str>) -> Result<ProbeReport> {
        let body = ProbeRequest {
            to: to.to_string(),
            from: from.map(str::to_string),
        };
        self.0.call("POST", "/v1/probe", Some(json(&body)?))
    }
}

/// A request body as JSON.
fn json(body: &impl serde::Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(body).context("encoding a request body")
}
