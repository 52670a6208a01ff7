//! `cutover status`: what is served, what is moving, what the old host sees.

use anyhow::Result;

use crate::Apis;

pub fn run(apis: &Apis) -> Result<()> {
    let dns = apis.dns()?;
    println!("services (dnsd at {}):", dns.0.base);
    for s in dns.services()? {
        println!(
            "  {:<32} ttl {:>6}  {}",
            s.name,
            s.ttl,
            s.addresses.join(", ")
        );
    }
    match dns.generations()?.iter().find(|g| g.current) {
        Some(g) => println!("workspace generation {}: {}", g.number, g.message),
        None => println!("workspace generation: none recorded yet"),
    }

    let migrations = apis.store().all()?;
    println!("migrations ({}):", apis.state_dir.display());
    if migrations.is_empty() {
        println!("  none");
    }
    for m in &migrations {
        println!("  {:<32} {} -> {}  {:?}", m.name, m.old, m.to, m.phase);
        match crate::lease::Lease::read(apis.state_dir.as_path(), &m.name)? {
            Some(h) if h.is_live(crate::migration::now()) => println!(
                "  {:<32} being changed by {} (lease until {})",
                "",
                h.describe(),
                crate::migration::clock(h.expires)
            ),
            Some(h) => println!(
                "  {:<32} stale lease of {} (it no longer runs; the next command takes it)",
                "",
                h.describe()
            ),
            None => {}
        }
        if m.busy_at_end {
            println!(
                "  {:<32} clients still arrived at {} when --max-cache ran out: its redirect stays on until `cutover retire {}`",
                "", m.old, m.name
            );
        }
        if let Some(url) = &m.reverse_on {
            println!(
                "  {:<32} reverse redirect {}:{} -> {}:{} (rule {}) on {url}; the next `cutover migrate {}` removes it",
                "",
                m.to,
                m.new_port,
                m.old,
                m.port,
                m.reverse_rule(),
                m.name
            );
        }
    }

    // The old host's redirects, then those of every new host a rollback put
    // a reverse redirect on (see `loops`).
    for (i, url) in crate::loops::known_redirectors(apis, &apis.store())?
        .iter()
        .enumerate()
    {
        let host = if i == 0 {
            "old host"
        } else {
            "reverse redirects, new host"
        };
        match apis.redirector_at(url)?.stats() {
            Ok(stats) => {
                println!("redirects ({host} at {url}):");
                if stats.rules.is_empty() {
                    println!("  none");
                }
                for r in stats.rules {
                    println!(
                        "  {:<24} {} -> {}  {:.1} new flows/s, {} active flows, {} clients, {} flows in all{}",
                        r.name,
                        r.from,
                        r.to,
                        r.new_flows_per_s,
                        r.active_flows,
                        r.distinct_clients,
                        r.new_flows,
                        if r.draining {
                            " (removed, draining)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Err(e) => println!("redirects ({host} at {url}): not available: {e:#}"),
        }
    }
    Ok(())
}
