//! The caching resolver the migration tests rely on behaves like the
//! resolvers of the mission: it keeps an answer for its TTL, then asks again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cutover_tests::netns::Netns;
use cutover_tests::process::{Daemon, wait_until};
use cutover_tests::{bins, unbound::Unbound};

fn resolve(ns: &Netns) -> String {
    ns.exec(
        "kdig",
        &[
            "@127.0.0.53",
            "+short",
            "+timeout=1",
            "+retry=0",
            "www.example.test",
            "A",
        ],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    .unwrap_or_default()
}

#[test]
fn a_caching_resolver_keeps_the_old_address_for_its_ttl_then_sees_the_new_one() -> anyhow::Result<()>
{
    let ns = Netns::new("cores")?;
    let ws = tempfile::tempdir()?;
    cutover_tests::dnsd::add_example_zone(ws.path())?;
    let service = |ip: &str| {
        format!("[[service]]\nname = \"www.example.test.\"\naddresses = [\"{ip}\"]\nttl = 3\n")
    };
    std::fs::write(ws.path().join("dnsd.toml"), service("198.18.0.2"))?;
    let mut cmd = ns.command(bins::path("dnsd"));
    cmd.arg("--workspace")
        .arg(ws.path())
        .args(["--listen", "127.0.0.1:5300"]);
    let dnsd = Daemon::spawn("dnsd", cmd)?;
    let upstream: SocketAddr = "127.0.0.1:5300".parse()?;
    let _unbound = Unbound::start(&ns, "127.0.0.53:53".parse()?, "example.test.", upstream)?;
    assert!(wait_until(Duration::from_secs(10), || resolve(&ns) == "198.18.0.2"));

    std::fs::write(ws.path().join("dnsd.toml"), service("198.18.0.3"))?;
    dnsd.signal(1)?;
    let flipped = Instant::now();
    // dnsd answers the new address at once; the resolver keeps the cached one.
    assert!(wait_until(Duration::from_secs(5), || {
        ns.exec(
            "kdig",
            &["@127.0.0.1", "-p", "5300", "+short", "www.example.test"],
        )
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "198.18.0.3")
    }));
    let cached = resolve(&ns);
    if flipped.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            cached, "198.18.0.2",
            "the resolver should still serve its cached answer"
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || resolve(&ns) == "198.18.0.3"),
        "the resolver never picked up the new address"
    );
    Ok(())
}
