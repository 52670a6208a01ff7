//! Shared harness for cutover's end-to-end tests: throw-away network
//! namespaces, child processes that die with the test, and the paths of the
//! workspace's binaries. Every test host lives in a namespace the test creates
//! and removes, addressed from 198.18.0.0/15 or 2001:2::/48.

pub mod bins;
pub mod bpffs;
pub mod browser;
pub mod checksum;
pub mod cpus;
pub mod dig;
pub mod dns_peers;
pub mod dnsd;
pub mod dnsd_api;
pub mod dnsd_update;
pub mod http_backend;
pub mod iperf3;
pub mod netns;
pub mod nginx;
pub mod process;
pub mod prometheus;
pub mod redirector;
pub mod redirector_site;
pub mod site_client;
pub mod syn_flood;
pub mod tmpfs;
pub mod topology;
pub mod udp_echo;
pub mod unbound;
pub mod xdp_pass;
pub mod xfr;
