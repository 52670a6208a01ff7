//! `GET /metrics` for both daemons: each scrape gathers the daemon's own
//! counters and states as plain values ([`Scrape`]), and `prometheus-client`
//! writes them in the Prometheus text format (0.0.4), names, help, types,
//! label escaping and all. The daemons keep their counters in their own
//! hot-path-friendly shapes (per-CPU maps, sharded atomics); this is only
//! their exposition.

use std::borrow::Cow;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::ApiError;

type Labels = Vec<(&'static str, Cow<'static, str>)>;

/// One metric family of a scrape: its samples, one per label set.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Labels, Value)>,
}

/// A sample's value: counts stay whole (an `f64` loses them past 2^53).
#[derive(Debug, Clone, Copy)]
pub enum Value {
    Count(u64),
    Real(f64),
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Self::Count(n)
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Self::Count(n.into())
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Self::Count(n as u64)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Count(b.into())
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Self::Real(x)
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Family {
    /// Adds one sample; `labels` are (name, value) pairs.
    pub fn sample<V: Into<Cow<'static, str>>>(
        &mut self,
        labels: impl IntoIterator<Item = (&'static str, V)>,
        value: impl Into<Value>,
    ) -> &mut Self {
        let labels = labels.into_iter().map(|(k, v)| (k, v.into())).collect();
        self.samples.push((labels, value.into()));
        self
    }

    /// A sample without labels.
    pub fn value(&mut self, value: impl Into<Value>) -> &mut Self {
        self.sample(std::iter::empty::<(&'static str, &'static str)>(), value)
    }
}

/// The metrics of one scrape, in the order they were added.
#[derive(Debug, Default)]
pub struct Scrape {
    families: Vec<Family>,
}

impl Scrape {
    /// A counter: `name` without the `_total` the format adds.
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, Kind::Counter)
    }

    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, Kind::Gauge)
    }

    fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> &mut Family {
        self.families.push(Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        });
        let last = self.families.len() - 1;
        &mut self.families[last]
    }

    /// The Prometheus text exposition of everything added.
    pub fn encode(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }

    /// The HTTP response a scrape gets.
    pub fn into_response(self) -> Response {
        match self.encode() {
            Ok(text) => (
                [(
                    header::CONTENT_TYPE,
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                )],
                text,
            )
                .into_response(),
            Err(_) => ApiError::internal("encoding the metrics failed").into_response(),
        }
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            // A family with no sample says nothing (and a bare descriptor
            // is not valid in the text format for a counter without value).
            if family.samples.is_empty() {
                continue;
            }
            let kind = match family.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                match (family.kind, *value) {
                    (Kind::Counter, Value::Count(n)) => ConstCounter::new(n).encode(sample)?,
                    (Kind::Counter, Value::Real(x)) => ConstCounter::new(x).encode(sample)?,
                    (Kind::Gauge, Value::Count(n)) => {
                        ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(sample)?
                    }
                    (Kind::Gauge, Value::Real(x)) => ConstGauge::new(x).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_written_in_the_text_format_with_escaped_labels() {
        let mut scrape = Scrape::default();
        scrape
            .counter("testd_queries", "Queries answered.")
            .sample([("transport", "udp"), ("qtype", "A")], 3u32)
            .sample([("transport", "tcp"), ("qtype", "A")], 1u32);
        scrape.gauge("testd_up", "Whether it is up.").value(true);
        scrape.gauge("testd_ratio", "A share.").value(0.25);
        scrape
            .gauge("testd_zone_serial", "Serial.")
            .sample([("zone", "we\"ird\\.")], 2_026_120_701u32);
        scrape.counter("testd_empty", "Nothing yet.");
        let text = scrape.encode().unwrap();
        assert_eq!(
            text,
            "# HELP testd_queries_total Queries answered.\n\
             # TYPE testd_queries_total counter\n\
             testd_queries_total{transport=\"udp\",qtype=\"A\"} 3\n\
             testd_queries_total{transport=\"tcp\",qtype=\"A\"} 1\n\
             # HELP testd_up Whether it is up.\n\
             # TYPE testd_up gauge\n\
             testd_up 1\n\
             # HELP testd_ratio A share.\n\
             # TYPE testd_ratio gauge\n\
             testd_ratio 0.25\n\
             # HELP testd_zone_serial Serial.\n\
             # TYPE testd_zone_serial gauge\n\
             testd_zone_serial{zone=\"we\\\"ird\\\\.\"} 2026120701\n"
        );
    }
}
