//! Forwarding loops: a redirect OLD -> NEW while some redirector forwards
//! NEW back to OLD (a rollback's `--reverse-on` rule left behind) bounces
//! every packet between the hosts until its TTL runs out, and a check of NEW
//! from outside passes, because OLD answers for it through the reverse rule.
//!
//! cutover knows the redirectors it has driven: the old host's, and the
//! `--reverse-on` host of every rollback recorded in the state directory.
//! Before a redirect into ADDR goes on, none of them may forward ADDR
//! anywhere (a redirect into an address that itself redirects is refused);
//! the one exception is the reverse rule this service's own rollback left,
//! which the next migrate removes — it exists only for clients that cached
//! the address the service is now moving to again.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};

use crate::Apis;
use crate::api::{Redirector, Rule};
use crate::migration::{Migration, Store};

/// A rule forwarding the address a redirect is about to point at.
pub struct Forwarding {
    pub redirector: Redirector,
    pub rule: Rule,
}

impl Forwarding {
    /// What an operator runs to remove it by hand.
    pub fn removal(&self) -> String {
        format!(
            "curl -X DELETE -H \"Authorization: Bearer $(cat TOKEN_FILE)\" {}/v1/rules/{}",
            self.redirector.0.base, self.rule.name
        )
    }
}

/// The base URLs of the redirectors cutover knows: the old host's and every
/// recorded `--reverse-on` host.
pub fn known_redirectors(apis: &Apis, store: &Store) -> Result<Vec<String>> {
    let mut urls = vec![apis.old.trim_end_matches('/').to_string()];
    for m in store.all()? {
        if let Some(url) = m.reverse_on {
            let url = url.trim_end_matches('/').to_string();
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
    }
    Ok(urls)
}

/// Every rule on a known redirector that forwards `target` (`IP:PORT`),
/// except the rule named `except` on the old host. A redirector cutover
/// cannot ask is an error: it may hold the loop.
pub fn forwarding(
    apis: &Apis,
    store: &Store,
    target: &str,
    except: &str,
) -> Result<Vec<Forwarding>> {
    let target: SocketAddr = target
        .parse()
        .with_context(|| format!("{target} is not IP:PORT"))?;
    let mut found = Vec::new();
    for url in known_redirectors(apis, store)? {
        let redirector = apis.redirector_at(&url)?;
        let rules = redirector.rules().with_context(|| {
            format!(
                "the redirector at {url}, which cutover has driven, cannot be asked for its rules"
            )
        })?;
        for rule in rules {
            let own = url == apis.old.trim_end_matches('/') && rule.name == except;
            if !own && rule.listens_on(target) {
                found.push(Forwarding {
                    redirector: apis.redirector_at(&url)?,
                    rule,
                });
            }
        }
    }
    Ok(found)
}

/// Before a redirect OLD -> `m.to` goes on: the reverse rule `previous` (this
/// service's last record) left behind is returned for removal; any other
/// rule forwarding NEW is refused, naming it and how to remove it.
pub fn before_redirect(
    apis: &Apis,
    store: &Store,
    m: &Migration,
    previous: Option<&Migration>,
) -> Result<Vec<Forwarding>> {
    let mut leftovers = Vec::new();
    for r in m.redirects() {
        let target = &r.to;
        for f in forwarding(apis, store, target, &r.rule)? {
            let ours = previous.is_some_and(|p| {
                p.reverse_on.as_deref().map(|u| u.trim_end_matches('/'))
                    == Some(f.redirector.0.base.as_str())
                    && p.redirects()
                        .iter()
                        .any(|pr| f.rule.name == pr.reverse_rule())
            });
            if !ours {
                bail!(
                    "the redirector at {} forwards {} -> {} (rule {}): a redirect {} -> {target} would \
                     loop or chain; remove that rule first: {}",
                    f.redirector.0.base,
                    f.rule.from,
                    f.rule.to,
                    f.rule.name,
                    r.from,
                    f.removal()
                );
            }
            if !leftovers
                .iter()
                .any(|l: &Forwarding| l.rule.name == f.rule.name)
            {
                leftovers.push(f);
            }
        }
    }
    Ok(leftovers)
}
