//! Dynamic DNS updates (RFC 2136) signed with TSIG: an operator's
//! `knsupdate`/`nsupdate` changes a zone, the change is served at once, is
//! a new workspace generation and survives a restart; updates without the
//! right key, outside the zone, or whose prerequisites fail change nothing.

use anyhow::{Result, ensure};
use cutover_tests::bins;
use cutover_tests::dnsd::DnsdWorkspace;
use cutover_tests::dnsd_update::{Key, UpdateDnsd, loopback};

const EXAMPLE: &str = "$TTL 60
@    IN SOA ns1 hostmaster 2026112601 3600 600 86400 60
     IN NS  ns1
ns1  IN A   198.18.0.53
pool IN A   198.18.0.10
pool IN A   198.18.0.11
";

const OTHER: &str = "$TTL 60
@    IN SOA ns1 hostmaster 7 3600 600 86400 60
     IN NS  ns1
ns1  IN A   198.18.0.54
";

/// `ops-key.` may update example.test.; `other-key.` only other.test.;
/// `www` is a service whose addresses belong to dnsd.toml.
const DNSD_TOML: &str = "[[service]]
name = \"www.example.test.\"
addresses = [\"198.18.0.2\"]
ttl = 60

[[tsig_key]]
name = \"ops-key.\"
algorithm = \"hmac-sha256\"
secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"
zones = [\"example.test.\"]

[[tsig_key]]
name = \"other-key.\"
algorithm = \"hmac-sha256\"
secret = \"b3RoZXIta2V5LXNlY3JldC1vdGhlci1rZXktc2VjcmV0\"
zones = [\"other.test.\"]
";

const OPS: Key = Key {
    name: "ops-key.",
    secret: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
};
const OTHER_KEY: Key = Key {
    name: "other-key.",
    secret: "b3RoZXIta2V5LXNlY3JldC1vdGhlci1rZXktc2VjcmV0",
};

fn tools_installed() -> bool {
    let ok = bins::have("knsupdate") && bins::have("nsupdate") && bins::have("kdig");
    if !ok {
        eprintln!(
            "skipped: knsupdate, nsupdate and kdig are needed (knot-dnsutils, bind9-dnsutils)"
        );
    }
    ok
}

fn workspace() -> Result<DnsdWorkspace> {
    let ws = DnsdWorkspace::new()?;
    ws.zone("example.test.", EXAMPLE)?;
    ws.zone("other.test.", OTHER)?;
    ws.toml(DNSD_TOML)?;
    Ok(ws)
}

#[test]
fn a_signed_update_is_served_at_once_is_a_generation_and_survives_a_restart() -> Result<()> {
    if !tools_installed() {
        return Ok(());
    }
    let ws = workspace()?;
    let mut dnsd = UpdateDnsd::start(&ws, loopback(1))?;
    let result = (|| -> Result<()> {
        ensure!(dnsd.serial("example.test.")? == 2026112601);
        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update add new.example.test. 60 A 198.18.0.7",
            false,
        )?;
        ensure!(status == "NOERROR", "add over UDP: {status}");
        ensure!(dnsd.kdig("new.example.test.", "A")? == ["198.18.0.7"]);
        ensure!(
            dnsd.serial("example.test.")? == 2026112602,
            "the serial is bumped"
        );

        // The update is one generation (after the import of the workspace
        // as it was found), named for its key and zone.
        let state = dnsd.state()?;
        ensure!(state.generations.len() == 2, "{:?}", state.generations);
        let message = &state.generations[1].1;
        ensure!(
            message.contains("ops-key.") && message.contains("example.test."),
            "{message}"
        );
        ensure!(
            state
                .zones
                .iter()
                .any(|(_, text)| text.contains("new.example.test. 60 IN A 198.18.0.7")),
            "the zone file holds the record: {:?}",
            state.zones
        );

        // Over TCP too, and the response is signed (knsupdate checks it).
        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update add new.example.test. 60 AAAA 2001:2::7\nupdate add new.example.test. 60 TXT \"added over tcp\"",
            true,
        )?;
        ensure!(status == "NOERROR", "add over TCP: {status}");
        ensure!(dnsd.kdig("new.example.test.", "AAAA")? == ["2001:2::7"]);
        ensure!(dnsd.state()?.generations.len() == 3);

        dnsd.restart(&ws)?;
        ensure!(
            dnsd.kdig("new.example.test.", "A")? == ["198.18.0.7"],
            "after a restart"
        );
        ensure!(dnsd.kdig("new.example.test.", "TXT")? == ["\"added over tcp\""]);
        ensure!(dnsd.serial("example.test.")? == 2026112603);
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}

#[test]
fn an_update_deletes_an_rrset_a_record_or_a_name() -> Result<()> {
    if !tools_installed() {
        return Ok(());
    }
    let ws = workspace()?;
    let dnsd = UpdateDnsd::start(&ws, loopback(2))?;
    let result = (|| -> Result<()> {
        ensure!(dnsd.kdig("pool.example.test.", "A")? == ["198.18.0.10", "198.18.0.11"]);
        let one = dnsd.nsupdate(
            Some(OPS),
            "example.test.",
            "update delete pool.example.test. A 198.18.0.10",
        )?;
        ensure!(one == "NOERROR", "{one}");
        ensure!(dnsd.kdig("pool.example.test.", "A")? == ["198.18.0.11"]);

        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update add pool.example.test. 60 TXT \"pool\"\nupdate delete pool.example.test. A",
            false,
        )?;
        ensure!(status == "NOERROR", "{status}");
        ensure!(
            dnsd.kdig("pool.example.test.", "A")?.is_empty(),
            "the A RRset is gone"
        );
        ensure!(dnsd.kdig("pool.example.test.", "TXT")? == ["\"pool\""]);

        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update delete pool.example.test.",
            false,
        )?;
        ensure!(status == "NOERROR", "{status}");
        ensure!(
            dnsd.kdig("pool.example.test.", "TXT")?.is_empty(),
            "the name is gone"
        );

        // The apex SOA and NS cannot be deleted: the update succeeds as a
        // no-op (RFC 2136 §3.4.2.4) and makes no generation.
        let before = dnsd.state()?;
        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update delete example.test. SOA\nupdate delete example.test. NS",
            false,
        )?;
        ensure!(status == "NOERROR", "{status}");
        ensure!(
            dnsd.state()? == before,
            "a no-op update changed the workspace"
        );
        ensure!(dnsd.kdig("example.test.", "NS")? == ["ns1.example.test."]);
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}

#[test]
fn failed_prerequisites_change_nothing() -> Result<()> {
    if !tools_installed() {
        return Ok(());
    }
    let ws = workspace()?;
    let dnsd = UpdateDnsd::start(&ws, loopback(3))?;
    let result = (|| -> Result<()> {
        // A first update, so that there is history to keep unchanged.
        let status = dnsd.knsupdate(
            Some(OPS),
            "example.test.",
            "update add a.example.test. 60 A 198.18.0.20",
            false,
        )?;
        ensure!(status == "NOERROR", "{status}");
        let before = dnsd.state()?;
        let cases = [
            ("prereq nxrrset pool.example.test. A", "YXRRSET"),
            ("prereq yxrrset missing.example.test. A", "NXRRSET"),
            ("prereq yxrrset pool.example.test. A 198.18.0.10", "NXRRSET"),
            ("prereq yxdomain missing.example.test.", "NXDOMAIN"),
            ("prereq nxdomain pool.example.test.", "YXDOMAIN"),
        ];
        for (prereq, expected) in cases {
            let commands = format!("{prereq}\nupdate add b.example.test. 60 A 198.18.0.21");
            let status = dnsd.knsupdate(Some(OPS), "example.test.", &commands, false)?;
            ensure!(
                status == expected,
                "{prereq}: {status}, expected {expected}"
            );
            ensure!(dnsd.state()? == before, "{prereq} changed the workspace");
        }
        ensure!(dnsd.kdig("b.example.test.", "A")?.is_empty());

        // Prerequisites that hold let the update through.
        let commands = "prereq yxrrset pool.example.test. A 198.18.0.10\nprereq yxrrset pool.example.test. A 198.18.0.11\nprereq nxdomain b.example.test.\nupdate add b.example.test. 60 A 198.18.0.21";
        let status = dnsd.knsupdate(Some(OPS), "example.test.", commands, false)?;
        ensure!(status == "NOERROR", "{status}");
        ensure!(dnsd.kdig("b.example.test.", "A")? == ["198.18.0.21"]);
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}

#[test]
fn updates_without_the_right_key_or_outside_the_zone_change_nothing() -> Result<()> {
    if !tools_installed() {
        return Ok(());
    }
    let ws = workspace()?;
    let dnsd = UpdateDnsd::start(&ws, loopback(4))?;
    let result = (|| -> Result<()> {
        let before = dnsd.state()?;
        let add = "update add evil.example.test. 60 A 198.18.0.66";
        let unknown = Key {
            name: "stranger.",
            secret: OPS.secret,
        };
        let wrong_secret = Key {
            name: "ops-key.",
            secret: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWc=",
        };
        let cases: [(&str, Option<Key>, &str, &str, &str); 7] = [
            ("unsigned", None, "example.test.", add, "REFUSED"),
            (
                "unknown key",
                Some(unknown),
                "example.test.",
                add,
                "NOTAUTH(BADKEY)",
            ),
            (
                "wrong secret",
                Some(wrong_secret),
                "example.test.",
                add,
                "NOTAUTH(BADSIG)",
            ),
            (
                "another zone's key",
                Some(OTHER_KEY),
                "example.test.",
                add,
                "REFUSED",
            ),
            (
                "a name outside the zone",
                Some(OPS),
                "example.test.",
                "update add evil.other.test. 60 A 198.18.0.66",
                "NOTZONE",
            ),
            (
                "a zone not served",
                Some(OPS),
                "elsewhere.test.",
                "update add evil.elsewhere.test. 60 A 198.18.0.66",
                "NOTAUTH",
            ),
            (
                "a service's address",
                Some(OPS),
                "example.test.",
                "update add www.example.test. 60 A 198.18.0.66",
                "REFUSED",
            ),
        ];
        for (what, key, zone, commands, expected) in cases {
            let status = dnsd.nsupdate(key, zone, commands)?;
            ensure!(status == expected, "{what}: {status}, expected {expected}");
            ensure!(dnsd.state()? == before, "{what} changed the workspace");
        }
        ensure!(dnsd.kdig("evil.example.test.", "A")?.is_empty());
        ensure!(dnsd.kdig("www.example.test.", "A")? == ["198.18.0.2"]);
        ensure!(before.generations.is_empty(), "{:?}", before.generations);

        // The key of other.test. works there, and only there.
        let status = dnsd.nsupdate(
            Some(OTHER_KEY),
            "other.test.",
            "update add ok.other.test. 60 A 198.18.0.30",
        )?;
        ensure!(status == "NOERROR", "{status}");
        ensure!(dnsd.kdig("ok.other.test.", "A")? == ["198.18.0.30"]);
        Ok(())
    })();
    result.map_err(|e| e.context(dnsd.log()))
}
