//! `cargo xtask connect` (hidden): the many-clients load of `bench
//! redirector`. Short HTTP connections, each from the next of many source
//! addresses with a port the kernel chooses, as a crowd of clients behind
//! their own addresses opens them; run inside the client's namespace.
//! Prints `connections=N failures=M seconds=S` for the bench to parse.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Socket, Type};

#[derive(clap::Args)]
pub struct Args {
    /// Where to connect.
    #[arg(long)]
    target: SocketAddrV4,
    /// The first client address; the others follow it.
    #[arg(long)]
    first_addr: Ipv4Addr,
    /// How many client addresses.
    #[arg(long)]
    addrs: u32,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 32)]
    threads: u32,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub fn run(args: Args) -> Result<()> {
    let ok = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    std::thread::scope(|s| {
        for t in 0..args.threads {
            let (ok, failed, args) = (&ok, &failed, &args);
            s.spawn(move || {
                let mut k = 0u32;
                while Instant::now() < deadline {
                    let n = (t + k * args.threads) % args.addrs.max(1);
                    let from = Ipv4Addr::from(u32::from(args.first_addr) + n);
                    match one(from, args.target) {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    k = k.wrapping_add(1);
                }
            });
        }
    });
    println!(
        "connections={} failures={} seconds={:.2}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One GET with `Connection: close` from `from` (port chosen by the
/// kernel); an error unless a complete 200 answer arrives.
fn one(from: Ipv4Addr, to: SocketAddrV4) -> Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect_timeout(&SocketAddr::V4(to).into(), Duration::from_secs(2))?;
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::with_capacity(512);
    stream.read_to_end(&mut answer)?;
    answer
        .starts_with(b"HTTP/1.1 200")
        .then_some(())
        .context("not a 200 answer")
}
