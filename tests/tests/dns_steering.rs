//! Weighted and regional answers: dnsd in a namespace of its own, asked
//! from several source addresses (and with EDNS Client Subnet by kdig), a
//! service's addresses weighted and tied to regions.
//!
//! Needs root; the daemon is `target/<profile>/dnsd` (`cargo build --bins`).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cutover_tests::bins;
use cutover_tests::dnsd::{answer_addresses, query_packet};
use cutover_tests::netns::Netns;
use cutover_tests::process::{Daemon, wait_until};

const NAME: &str = "www.example.test";
const SERVER: &str = "127.0.0.1:5300";
/// Client addresses on the namespace's loopback: one per region, one in none.
const EU_CLIENT: &str = "198.18.64.1";
const US_CLIENT: &str = "198.18.128.1";
const NOWHERE_CLIENT: &str = "198.18.0.9";

struct Server {
    ns: Netns,
    _dnsd: Daemon,
    _ws: tempfile::TempDir,
}

impl Server {
    fn start(toml: &str) -> Result<Self> {
        let ns = Netns::new("steer")?;
        for a in [EU_CLIENT, US_CLIENT, NOWHERE_CLIENT] {
            ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
        }
        let ws = tempfile::Builder::new().prefix("cutover-steer").tempdir()?;
        cutover_tests::dnsd::add_example_zone(ws.path())?;
        std::fs::write(ws.path().join("dnsd.toml"), toml)?;
        let mut cmd = ns.command(bins::path("dnsd"));
        cmd.arg("--workspace")
            .arg(ws.path())
            .args(["--listen", SERVER, "--no-api"]);
        let dnsd = Daemon::spawn("dnsd", cmd)?;
        let server = Self {
            ns,
            _dnsd: dnsd,
            _ws: ws,
        };
        ensure!(
            wait_until(Duration::from_secs(10), || server
                .ask_many(NOWHERE_CLIENT, 1)
                .is_ok()),
            "dnsd does not answer"
        );
        Ok(server)
    }

    /// `n` A queries from `from`, over UDP; each answer's addresses in order.
    fn ask_many(&self, from: &str, n: usize) -> Result<Vec<Vec<Ipv4Addr>>> {
        let from: Ipv4Addr = from.parse()?;
        let server: SocketAddr = SERVER.parse()?;
        self.ns.run_in(|| {
            let socket = UdpSocket::bind((from, 0))?;
            socket.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut answers = Vec::with_capacity(n);
            let mut buf = [0u8; 2048];
            for i in 0..n {
                let query = query_packet(i as u16, NAME, 1, true);
                socket.send_to(&query, server)?;
                let (len, _) = socket.recv_from(&mut buf).context("no answer")?;
                answers.push(answer_addresses(&buf[..len]).context("not an answer")?);
            }
            Ok(answers)
        })
    }

    /// kdig with EDNS Client Subnet `subnet`: the addresses answered and
    /// the echoed option (`198.18.64.0/24/18`).
    fn ask_subnet(&self, subnet: &str) -> Result<(Vec<String>, String)> {
        let out = self.ns.exec(
            "kdig",
            &[
                "@127.0.0.1",
                "-p",
                "5300",
                &format!("+subnet={subnet}"),
                NAME,
                "A",
            ],
        )?;
        let text = String::from_utf8(out.stdout)?;
        let ecs = text
            .lines()
            .find_map(|l| l.split("CLIENT-SUBNET:").nth(1))
            .map(|s| s.trim().to_string())
            .with_context(|| format!("no CLIENT-SUBNET echoed: {text}"))?;
        let mut addresses: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(NAME) && l.contains("\tA\t"))
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        addresses.sort();
        Ok((addresses, ecs))
    }
}

fn ip(a: &str) -> Ipv4Addr {
    a.parse().expect("an address")
}

#[test]
fn weights_set_the_share_of_answers_each_address_leads() -> Result<()> {
    let server = Server::start(
        r#"
[server]
max_answers = 1

[[service]]
name = "www.example.test."
ttl = 60
addresses = [
  { address = "198.18.0.3", weight = 1 },
  { address = "198.18.0.4", weight = 3 },
  { address = "198.18.0.5", weight = 0 },
]
"#,
    )?;
    let answers = server.ask_many(NOWHERE_CLIENT, 10_000)?;
    ensure!(answers.iter().all(|a| a.len() == 1), "max_answers = 1");
    let share =
        |a: &str| answers.iter().filter(|x| x[0] == ip(a)).count() as f64 / answers.len() as f64;
    let (one, three, zero) = (
        share("198.18.0.3"),
        share("198.18.0.4"),
        share("198.18.0.5"),
    );
    ensure!(
        (one - 0.25).abs() <= 0.02 && (three - 0.75).abs() <= 0.02 && zero == 0.0,
        "shares {one:.3} / {three:.3} / {zero:.3}, configured 1:3:0"
    );
    Ok(())
}

const REGIONAL: &str = r#"
[regions]
"198.18.64.0/18" = "eu"
"198.18.128.0/18" = "us"

[[service]]
name = "www.example.test."
ttl = 60
addresses = [
  { address = "198.18.0.3", region = "eu" },
  { address = "198.18.0.4", region = "us" },
  "198.18.0.5",
]
"#;

#[test]
fn a_client_gets_its_regions_addresses_by_source_address() -> Result<()> {
    let server = Server::start(REGIONAL)?;
    let seen = |from: &str| -> Result<Vec<Ipv4Addr>> {
        let mut all: Vec<Ipv4Addr> = server.ask_many(from, 20)?.into_iter().flatten().collect();
        all.sort();
        all.dedup();
        Ok(all)
    };
    assert_eq!(seen(EU_CLIENT)?, [ip("198.18.0.3"), ip("198.18.0.5")]);
    assert_eq!(seen(US_CLIENT)?, [ip("198.18.0.4"), ip("198.18.0.5")]);
    assert_eq!(
        seen(NOWHERE_CLIENT)?,
        [ip("198.18.0.3"), ip("198.18.0.4"), ip("198.18.0.5")],
        "no region: every region's addresses"
    );
    Ok(())
}

#[test]
fn client_subnet_decides_the_region_and_the_scope_says_how_far_it_holds() -> Result<()> {
    let server = Server::start(REGIONAL)?;
    let (eu, ecs) = server.ask_subnet("198.18.64.0/24")?;
    assert_eq!(eu, ["198.18.0.3", "198.18.0.5"]);
    assert_eq!(ecs, "198.18.64.0/24/18", "scope: the region's prefix");
    let (nowhere, ecs) = server.ask_subnet("198.18.200.0/24")?;
    assert_eq!(nowhere, ["198.18.0.3", "198.18.0.4", "198.18.0.5"]);
    // Scope 18: the client's 198.18.192.0/18 holds neither region's network.
    assert_eq!(
        ecs, "198.18.200.0/24/18",
        "scope: the network no region shares"
    );
    // A name whose answer does not depend on the client: scope 0.
    let out = server.ns.exec(
        "kdig",
        &[
            "@127.0.0.1",
            "-p",
            "5300",
            "+subnet=198.18.64.0/24",
            "ns1.example.test",
            "A",
        ],
    )?;
    let text = String::from_utf8(out.stdout)?;
    ensure!(text.contains("198.18.64.0/24/0"), "{text}");
    Ok(())
}
