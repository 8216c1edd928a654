//! proclens's exporter: Prometheus metrics for every container on a host (cAdvisor's names
//! where the meaning is the same, plus PSI), read through the collector at scrape time.
//!
//! Flow: [`scrape::Exporter::scrape`] lists the containers ([`proclens_cgroup::Collector::list`]),
//! reads each one's [`proclens_cgroup::ContainerSnapshot`] with only the parts the enabled
//! [`families`] need, and writes every family through the [`encode::Encoder`] in the format the
//! scraper asked for. [`server`] serves it over HTTP; [`web`] adds what an operator's web config
//! file asks for (TLS, basic auth, headers). With remote write on, [`remote_write`] has the same
//! code collect every interval into a [`series::SeriesSet`] instead of text, and pushes it
//! (protobuf, snappy) through a bounded queue. [`fused`] adds proclens-fused's own numbers, read
//! from the stats file it rewrites.

pub mod config;
pub mod encode;
pub mod families;
pub mod filter;
pub mod fused;
pub mod remote_write;
pub mod runtime;
pub mod scrape;
pub mod series;
pub mod server;
pub mod web;
