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
    }

    let old = apis.old()?;
    match old.stats() {
        Ok(stats) => {
            println!("redirects (old host at {}):", old.0.base);
            if stats.rules.is_empty() {
                println!("  none");
            }
            for r in stats.rules {
                println!(
                    "  {:<24} {} -> {}  {:.1} new flows/s, {} active flows, {} clients, {} flows in all",
                    r.name,
                    r.from,
                    r.to,
                    r.new_flows_per_s,
                    r.active_flows,
                    r.distinct_clients,
                    r.new_flows
                );
            }
        }
        Err(e) => println!("redirects: not available: {e:#}"),
    }
    Ok(())
}
