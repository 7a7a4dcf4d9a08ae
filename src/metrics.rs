//! The metrics endpoint (`metrics_listen`): `GET /metrics` (and `HEAD`) in the Prometheus text format
//! (version 0.0.4), read from `Stats` at each scrape. It keeps no counters of its own, so
//! it cannot drift from the `event=stats` line.
//!
//! It runs on the milter's runtime, so it must never hold up mail: at most
//! `MAX_CONNECTIONS` HTTP connections at once (one more is closed at once), one request
//! per connection, `HEADER_TIMEOUT` to send the request head and `CONNECTION_TIMEOUT`
//! for the whole connection. A scrape is a few dozen atomic loads and a string.

use crate::{
    dns::counters::{LookupResult, LookupTime},
    ruleset::RuleKind,
    shared::Shared,
    stats::{
        Bounds, FrontEnd, HistogramSnapshot, Key, Outcome, SessionError, Stats, BUCKETS,
        RCPT_ANSWER_BUCKETS,
    },
    verdict::{DnsFallback, Exemption},
    VERSION,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn, Level};
use prometheus_client::{
    collector::Collector,
    encoding::{prometheus_text, DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};
use std::{
    borrow::Cow,
    convert::Infallible,
    fmt,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{net::TcpListener, sync::Semaphore};

/// HTTP connections served at once; Prometheus needs one.
pub const MAX_CONNECTIONS: usize = 16;
/// From accept to the end of the request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// From accept to close.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

pub const PATH: &str = "/metrics";

/// The line logged at every start with metrics: where; a warning when the address is
/// beyond this host, where anyone who can reach it can read the counters.
pub fn start_line(addr: SocketAddr) -> (Level, String) {
    if addr.ip().is_loopback() {
        (
            Level::Info,
            format!("event=metrics listen={addr} path={PATH}"),
        )
    } else {
        (
            Level::Warn,
            format!(
                "event=metrics listen={addr} path={PATH} warning=\"not loopback: anyone who can reach this address can read the counters; firewall it\""
            ),
        )
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let registry = Arc::new(registry(shared));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut last_full_warning: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: the milter needs them more.
                debug!("event=metrics accept_error={:?}", e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Closed at once: a flood of scrapers gets nothing, the mail goes on.
            if last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                warn!(
                    "event=metrics peer={peer} closed reason=\"{MAX_CONNECTIONS} HTTP connections open already\""
                );
                last_full_warning = Some(Instant::now());
            }
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &registry);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("event=metrics peer={peer} error={:?}", e.to_string()),
                Err(_) => debug!("event=metrics peer={peer} closed reason=timeout"),
            }
            drop(permit);
        });
    }
}

/// The answer to one request: the metrics, 404 or 405.
fn respond(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if request.uri().path() != PATH {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; the metrics are at /metrics\n",
        );
    }
    // RFC 9110 §9.1: every server supports GET and HEAD. Hyper answers HEAD with the
    // head of the GET response (Content-Length included) and leaves the body out.
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut text = String::with_capacity(8192);
    if let Err(fmt::Error) = prometheus_text::encode(&mut text, registry) {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode\n");
    }
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
    );
    response
}

/// The registry of every series, read from `shared` at each scrape.
pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::with_prefix("bogus_helo_milter");
    registry.register_collector(Box::new(StatsCollector(shared)));
    registry
}

/// `Stats` seen as Prometheus series: every label combination, zeros included, so that
/// `rate()` and alerts work before the first event.
struct StatsCollector(Arc<Shared>);

impl fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatsCollector")
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let stats: &Stats = &self.0.stats;
        encode_verdict_series(stats, &mut encoder)?;
        encode_config_series(stats, &mut encoder)?;
        encode_connection_series(stats, &mut encoder)?;
        encode_header_series(stats, &mut encoder)?;
        encode_dns_series(stats, &mut encoder)?;
        gauges(
            &mut encoder,
            "build_info",
            "Always 1; the version of the milter in the label.",
            [([("version", VERSION)], 1)],
        )
    }
}

/// A counter family: one series per label set.
fn counters<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (S, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, n) in series {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
    }
    Ok(())
}

/// A gauge family: one series per label set.
fn gauges<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (S, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, n) in series {
        family.encode_family(&labels)?.encode_gauge(&n)?;
    }
    Ok(())
}

/// A gauge without labels.
fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A series per front end: `[("front_end", ...)]` and its value.
fn per_front_end(
    value: impl Fn(FrontEnd) -> u64,
) -> impl Iterator<Item = ([(&'static str, &'static str); 1], u64)> {
    FrontEnd::ALL
        .into_iter()
        .map(move |via| ([("front_end", via.name())], value(via)))
}

/// A series per front end and reason: `[("front_end", ...), ("reason", ...)]`.
fn per_front_end_and_reason<R: Key>(
    reason: fn(&R) -> &'static str,
    value: impl Fn(FrontEnd, R) -> u64 + Copy,
) -> impl Iterator<Item = ([(&'static str, &'static str); 2], u64)> {
    FrontEnd::ALL.into_iter().flat_map(move |via| {
        R::ALL.iter().map(move |&r| {
            let labels = [("front_end", via.name()), ("reason", reason(&r))];
            (labels, value(via, r))
        })
    })
}

/// Recipients refused (or that would have been) and exempted.
fn encode_verdict_series(stats: &Stats, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let matched = FrontEnd::ALL.into_iter().flat_map(|via| {
        Outcome::ALL.into_iter().flat_map(move |outcome| {
            RuleKind::ALL.into_iter().map(move |rule| {
                let labels = [
                    ("front_end", Cow::from(via.name())),
                    ("rule", Cow::from(rule.name())),
                    ("action", Cow::from(outcome.action().to_string())),
                ];
                (labels, stats.matched(via, outcome, rule))
            })
        })
    });
    counters(
        encoder,
        "verdicts",
        "Recipients refused, or that would have been (log) or were tagged, by front end, rule and action.",
        matched,
    )?;
    counters(
        encoder,
        "exemptions",
        "Recipients that a rule matched but an exemption let through, by front end and reason.",
        per_front_end_and_reason(Exemption::name, |via, e| stats.exempted(via, e)),
    )?;
    let dns_failures = FrontEnd::ALL.into_iter().flat_map(|via| {
        DnsFallback::ALL.into_iter().map(move |fallback| {
            let labels = [("front_end", via.name()), ("outcome", fallback.name())];
            (labels, stats.dns_failures(via, fallback))
        })
    });
    counters(
        encoder,
        "dns_failures",
        "Recipients whose DNS rule (unknown, mismatch) a temporary DNS failure left undecided, by front end and outcome: tempfailed or accepted (dns_failure, where the rule would have refused), no_verdict (it would not have).",
        dns_failures,
    )
}

/// The configuration's loads and reloads.
fn encode_config_series(stats: &Stats, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let (ok, failed) = stats.reloads();
    counters(
        encoder,
        "config_reloads",
        "Configuration reloads (SIGHUP) by result; a failed one keeps the configuration in force.",
        [([("result", "ok")], ok), ([("result", "failed")], failed)],
    )?;
    gauge(
        encoder,
        "config_last_load_timestamp_seconds",
        "Unix time of the last successful configuration load, at start or reload.",
        stats.last_load(),
    )?;
    gauge(
        encoder,
        "config_last_reload_successful",
        "1 if the last configuration load (start or reload) succeeded, 0 while the file on disk does not load; a restart would then fail.",
        u64::from(stats.last_reload_successful()),
    )
}

/// The RCPT answer time, the MTA's connections and the sessions closed on an error.
fn encode_connection_series(stats: &Stats, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    encode_rcpt_answer(stats, encoder)?;
    gauges(
        encoder,
        "connections_open",
        "MTA connections open now, by front end (milter sessions, policy service connections).",
        per_front_end(|via| stats.connections_open(via) as u64),
    )?;
    counters(
        encoder,
        "connections",
        "MTA connections since start, by front end.",
        per_front_end(|via| stats.connections_total(via)),
    )?;
    let running = FrontEnd::ALL.into_iter().filter_map(|via| {
        let max = stats.connections_max(via)?;
        Some(([("front_end", via.name())], max as u64))
    });
    gauges(
        encoder,
        "connections_max",
        "MTA connections served at once (max_connections), by front end; only the front ends that run.",
        running,
    )?;
    counters(
        encoder,
        "connection_waits",
        "MTA connections that waited in the listen queue for a slot, max_connections being reached, by front end.",
        per_front_end(|via| stats.connection_waits(via)),
    )?;
    counters(
        encoder,
        "session_errors",
        "MTA sessions closed on an error, by front end and reason (protocol, oversized, timeout, io).",
        per_front_end_and_reason(SessionError::name, |via, r| stats.session_errors(via, r)),
    )
}

/// The histogram of RCPT answer times, per front end.
fn encode_rcpt_answer(stats: &Stats, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let mut family = encoder.encode_descriptor(
        "rcpt_answer_seconds",
        "Time from a RCPT's arrival to its answer, by front end.",
        None,
        MetricType::Histogram,
    )?;
    for via in FrontEnd::ALL {
        let snapshot = stats.rcpt_answer(via);
        let buckets = buckets(&RCPT_ANSWER_BUCKETS, &snapshot);
        family
            .encode_family(&[("front_end", via.name())])?
            .encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count, &buckets, None)?;
    }
    Ok(())
}

/// A histogram's buckets as prometheus-client takes them: (bound in seconds, count in
/// that bucket alone).
fn buckets(bounds: &[u64; BUCKETS], snapshot: &HistogramSnapshot) -> Vec<(f64, u64)> {
    let mut below = 0;
    bounds
        .iter()
        .zip(snapshot.cumulative)
        .map(|(&nanos, cumulative)| {
            let n = cumulative - below;
            below = cumulative;
            (nanos as f64 / 1e9, n)
        })
        .collect()
}

/// The DNS lookups about HELO names: by result, and their latency.
fn encode_dns_series(stats: &Stats, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let dns = stats.dns();
    counters(
        encoder,
        "dns_lookups",
        "DNS lookups about HELO names (one per question: A, AAAA, MX; cache hits are none), by result.",
        LookupResult::ALL.map(|result| ([("result", result.name())], dns.lookups(result))),
    )?;
    encoder
        .encode_descriptor(
            "dns_lookups_dropped",
            "DNS questions about HELO names left unasked, the bound on lookups in flight being reached; they count as a DNS timeout.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&dns.dropped_count(), None)?;
    let snapshot = dns.duration();
    let buckets = buckets(&LookupTime::BOUNDS, &snapshot);
    encoder
        .encode_descriptor(
            "dns_lookup_duration_seconds",
            "Time a DNS lookup about a HELO name took, to its answer or its timeout.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(snapshot.sum_seconds, snapshot.count, &buckets, None)
}

/// The milter's header work besides tagging (issue 19): forged headers removed, and
/// sessions where `tag` acted as `log`.
fn encode_header_series(stats: &Stats, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let milter = [("front_end", FrontEnd::Milter.name())];
    counters(
        encoder,
        "forged_headers_removed",
        "Incoming X-Bogus-HELO headers removed (while some setting uses tag), by front end.",
        [(milter, stats.forged_headers(FrontEnd::Milter))],
    )?;
    counters(
        encoder,
        "tag_unavailable_sessions",
        "Sessions in which some setting uses tag but the MTA offered no header changes, so tag acted as log, by front end.",
        [(milter, stats.tag_unavailable_sessions(FrontEnd::Milter))],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, verdict::Rule, verdict::Verdict};

    fn scrape(shared: Arc<Shared>) -> String {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry(shared)).unwrap();
        text
    }

    #[test]
    fn an_address_beyond_loopback_is_a_warning() {
        for (addr, level) in [
            ("127.0.0.1:9465", Level::Info),
            ("127.0.0.2:9465", Level::Info),
            ("[::1]:9465", Level::Info),
            ("0.0.0.0:9465", Level::Warn),
            ("192.0.2.1:9465", Level::Warn),
            ("[::]:9465", Level::Warn),
            ("[2001:db8::1]:9465", Level::Warn),
        ] {
            let (got, line) = start_line(addr.parse().unwrap());
            assert_eq!(got, level, "{addr}");
            assert!(line.starts_with(&format!("event=metrics listen={addr} path=/metrics")));
            assert_eq!(
                line.contains("warning=\"not loopback: "),
                level == Level::Warn
            );
        }
    }

    #[test]
    fn every_series_from_the_start_and_values_from_stats() {
        let config = Config::parse("", "test").unwrap();
        let shared = Arc::new(Shared::new(config.ruleset().clone()));
        let text = scrape(shared.clone());
        // 2 front ends x 4 actions x 7 rules; 2 x 5 exemptions; 2 x 4 session errors;
        // 2 x 3 outcomes of DNS failures.
        let count = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(count("bogus_helo_milter_verdicts_total{"), 56, "{text}");
        assert_eq!(count("bogus_helo_milter_exemptions_total{"), 10, "{text}");
        assert_eq!(count("bogus_helo_milter_dns_failures_total{"), 6, "{text}");
        assert_eq!(
            count("bogus_helo_milter_session_errors_total{"),
            8,
            "{text}"
        );
        assert_eq!(
            count("bogus_helo_milter_rcpt_answer_seconds_bucket{"),
            28,
            "{text}"
        );
        assert!(text.contains(
            "bogus_helo_milter_verdicts_total{front_end=\"policy\",rule=\"rcpt-domain\",action=\"tag\"} 0\n"
        ));
        assert!(text.contains("# TYPE bogus_helo_milter_rcpt_answer_seconds histogram\n"));
        assert!(text.contains(
            "bogus_helo_milter_verdicts_total{front_end=\"milter\",rule=\"non-fqdn\",action=\"reject\"} 0\n"
        ));
        assert!(text.contains(
            "bogus_helo_milter_verdicts_total{front_end=\"policy\",rule=\"mismatch\",action=\"tag\"} 0\n"
        ));
        assert!(text.contains(
            "bogus_helo_milter_dns_failures_total{front_end=\"milter\",outcome=\"no_verdict\"} 0\n"
        ));

        shared
            .stats
            .count(FrontEnd::PolicyService, &Verdict::Tempfail(Rule::Ip));
        shared
            .stats
            .count(FrontEnd::Milter, &Verdict::Log(Rule::Invalid));
        shared
            .stats
            .answer_took(FrontEnd::Milter, Duration::from_micros(30));
        let failure = Verdict::DnsFailure(
            Rule::Unknown,
            crate::dns::Failure::Timeout,
            DnsFallback::Tempfail,
        );
        shared.stats.count(FrontEnd::PolicyService, &failure);
        let text = scrape(shared);
        assert!(text.contains(
            "bogus_helo_milter_dns_failures_total{front_end=\"policy\",outcome=\"tempfailed\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "bogus_helo_milter_dns_failures_total{front_end=\"milter\",outcome=\"tempfailed\"} 0\n"
        ), "{text}");
        assert!(text.contains(
            "bogus_helo_milter_verdicts_total{front_end=\"policy\",rule=\"ip\",action=\"tempfail\"} 1\n"
        ));
        assert!(text.contains(
            "bogus_helo_milter_verdicts_total{front_end=\"milter\",rule=\"invalid\",action=\"log\"} 1\n"
        ));
        assert!(text.contains(
            "bogus_helo_milter_rcpt_answer_seconds_bucket{front_end=\"milter\",le=\"2.5e-05\"} 0\n"
        ), "{text}");
        assert!(text.contains(
            "bogus_helo_milter_rcpt_answer_seconds_bucket{front_end=\"milter\",le=\"5e-05\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "bogus_helo_milter_rcpt_answer_seconds_bucket{front_end=\"milter\",le=\"+Inf\"} 1\n"
        ), "{text}");
        assert!(text.contains(&format!(
            "bogus_helo_milter_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn dns_lookups_by_result_and_their_latency() {
        let config = Config::parse("", "test").unwrap();
        let shared = Arc::new(Shared::new(config.ruleset().clone()));
        let text = scrape(shared.clone());
        for result in ["ok", "nxdomain", "nodata", "servfail", "timeout"] {
            let line = format!("bogus_helo_milter_dns_lookups_total{{result=\"{result}\"}} 0\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(
            text.contains("bogus_helo_milter_dns_lookups_dropped_total 0\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE bogus_helo_milter_dns_lookup_duration_seconds histogram\n"));
        let buckets = text
            .lines()
            .filter(|l| l.starts_with("bogus_helo_milter_dns_lookup_duration_seconds_bucket{"))
            .count();
        assert_eq!(buckets, 14, "{text}");

        let dns = shared.stats.dns();
        dns.looked_up(&crate::dns::Answer::NxDomain, Duration::from_millis(3));
        dns.looked_up(&crate::dns::Answer::NoData, Duration::from_millis(30));
        dns.dropped();
        let text = scrape(shared);
        for line in [
            "bogus_helo_milter_dns_lookups_total{result=\"nxdomain\"} 1\n",
            "bogus_helo_milter_dns_lookups_total{result=\"nodata\"} 1\n",
            "bogus_helo_milter_dns_lookups_total{result=\"ok\"} 0\n",
            "bogus_helo_milter_dns_lookups_dropped_total 1\n",
            "bogus_helo_milter_dns_lookup_duration_seconds_bucket{le=\"0.0025\"} 0\n",
            "bogus_helo_milter_dns_lookup_duration_seconds_bucket{le=\"0.005\"} 1\n",
            "bogus_helo_milter_dns_lookup_duration_seconds_bucket{le=\"0.05\"} 2\n",
            "bogus_helo_milter_dns_lookup_duration_seconds_count 2\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
