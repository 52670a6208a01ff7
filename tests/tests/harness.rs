//! The test network itself: if these fail, every end-to-end result is void.

use cutover_tests::nginx::Nginx;
use cutover_tests::topology::{NEW_IP, OLD_IP, Topology};

#[test]
fn hosts_on_the_switch_reach_each_other_over_http() -> anyhow::Result<()> {
    let net = Topology::new()?;
    let _new = Nginx::start(&net.new, &[80], "served by new\n", &[])?;
    let _old = Nginx::start(&net.old, &[80], "served by old\n", &[])?;
    for (ip, body) in [(NEW_IP, "served by new\n"), (OLD_IP, "served by old\n")] {
        let out = net.client.exec(
            "curl",
            &["-sS", "--max-time", "5", &format!("http://{ip}/")],
        )?;
        assert_eq!(String::from_utf8_lossy(&out.stdout), body);
    }
    Ok(())
}

#[test]
fn namespaces_are_removed_when_the_topology_drops() -> anyhow::Result<()> {
    let name = {
        let net = Topology::new()?;
        net.old.name.clone()
    };
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&name));
    Ok(())
}
