//! A zone made of several files: `example.test.zone` `$INCLUDE`s its hosts
//! from `zones/inc/hosts.inc`. The workspace history versions the included
//! file with the zone, so a change made through dnsd's API is validated
//! with it (and accepted), a hand edit of it is kept as a generation of its
//! own, and a rollback brings its earlier content back, served at once.

use std::fs;

use anyhow::{Result, ensure};
use cutover_control_api::contract::GenerationInfo;
use cutover_tests::dnsd::{DnsdWorkspace, loopback};
use cutover_tests::dnsd_api::ApiDnsd;

const ZONE: &str = "$TTL 60
@    IN SOA ns1 hostmaster 2026112601 3600 600 86400 60
     IN NS  ns1
ns1  IN A   198.18.0.53
$INCLUDE inc/hosts.inc
";

const HOSTS: &str = "mail IN A 198.18.0.25\n";

const DNSD_TOML: &str = "[[service]]
name = \"www.example.test.\"
addresses = [\"198.18.0.2\"]
ttl = 60
";

/// The workspace, with the included file in a subdirectory of `zones/`.
fn workspace() -> Result<DnsdWorkspace> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", ZONE)?;
    fs::create_dir_all(ws.path().join("zones/inc"))?;
    fs::write(ws.path().join("zones/inc/hosts.inc"), HOSTS)?;
    ws.toml(DNSD_TOML)?;
    Ok(ws)
}

#[test]
fn a_zone_that_includes_a_file_can_be_changed_and_rolled_back_with_it() -> Result<()> {
    let ws = workspace()?;
    let dnsd = ApiDnsd::start(&ws, loopback(190), &[])?;
    let hosts = ws.path().join("zones/inc/hosts.inc");
    let run = || -> Result<()> {
        let token = dnsd.default_token()?;
        let t = Some(token.as_str());
        ensure!(
            dnsd.kdig("mail.example.test.", "A")? == ["198.18.0.25"],
            "the included host is not served"
        );

        // The staged copy the change is validated in holds the included
        // file, so the zone loads there and the change is accepted.
        let r = dnsd.call(
            "PUT",
            "/v1/services/www.example.test.",
            t,
            Some(r#"{"addresses":["198.18.0.3"]}"#),
        )?;
        ensure!(
            r.status == 200,
            "a change beside an $INCLUDE is refused: {r:?}"
        );
        ensure!(r.body == r#"{"generation":2}"#, "{r:?}");
        ensure!(dnsd.kdig("www.example.test.", "A")? == ["198.18.0.3"]);

        // The operator moves mail by editing the included file; the next
        // change through the API records that edit first, and serves it.
        fs::write(&hosts, "mail IN A 198.18.0.26\n")?;
        let r = dnsd.call(
            "PUT",
            "/v1/services/www.example.test.",
            t,
            Some(r#"{"addresses":["198.18.0.4"]}"#),
        )?;
        ensure!(r.body == r#"{"generation":4}"#, "{r:?}");
        let r = dnsd.call("GET", "/v1/generations", t, None)?;
        ensure!(
            r.json::<Vec<GenerationInfo>>()?
                .iter()
                .any(|g| g.number == 3
                    && g.message == "hand edits since generation 2"
                    && !g.current),
            "the hand edit of the included file is not its own generation: {r:?}"
        );
        ensure!(dnsd.kdig("mail.example.test.", "A")? == ["198.18.0.26"]);

        // Back to before the hand edit: the included file's earlier content
        // is restored and served, with the service as it was then.
        let r = dnsd.call("POST", "/v1/generations/2/rollback", t, None)?;
        ensure!(r.body == r#"{"generation":5}"#, "{r:?}");
        ensure!(
            fs::read_to_string(&hosts)? == HOSTS,
            "the include is not restored"
        );
        ensure!(dnsd.kdig("mail.example.test.", "A")? == ["198.18.0.25"]);
        ensure!(dnsd.kdig("www.example.test.", "A")? == ["198.18.0.3"]);

        // Each generation holds the included file, as it was then.
        let generations = ws.path().join(".cutover/generations");
        for (n, mail) in [(1, "198.18.0.25"), (2, "198.18.0.25"), (3, "198.18.0.26")] {
            let kept = fs::read_to_string(generations.join(format!("{n}/zones/inc/hosts.inc")))?;
            ensure!(kept.contains(mail), "generation {n} holds {kept:?}");
        }
        Ok(())
    };
    run().map_err(|e| e.context(dnsd.log()))
}
