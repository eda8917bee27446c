//! Nothing lost: keep-alive clients (tests/util/load.rs) count every
//! request that does not get its answer while workers come and go.

use std::time::Duration;

use crate::util::load::{Load, LoadSpec};
use crate::util::wsgi::serve_app;
use crate::util::TestDir;

#[test]
fn keep_alive_load_without_signals_loses_nothing() {
    let t = TestDir::new();
    let s = serve_app(&t, "loadapp:application", &["-w", "2"]);
    let mut spec = LoadSpec::new(s.addr, 4);
    spec.post_path = Some("/echo".into());
    let load = Load::start(spec);
    assert!(
        load.wait_more(200, Duration::from_secs(20)),
        "the load made no progress:\n{}",
        s.logs()
    );
    let report = load.finish();
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        report.failures.len(),
        report.ok + report.failures.len(),
        &report.failures[..report.failures.len().min(10)]
    );
    assert_eq!(
        report.connections, 4,
        "keep-alive: one connection per client"
    );
}

#[test]
fn keep_alive_load_across_max_requests_churn_loses_nothing() {
    let t = TestDir::new();
    let s = serve_app(
        &t,
        "loadapp:application",
        &["-w", "2", "--max-requests", "200", "--access-log", "off"],
    );
    let mut spec = LoadSpec::new(s.addr, 4);
    spec.post_path = Some("/echo".into());
    let load = Load::start(spec);
    // Six recycles: every worker replaced three times while clients keep
    // their connections busy.
    let recycled = s.stderr.wait_for(Duration::from_secs(60), |lines| {
        lines.iter().filter(|l| l.contains(") stopped")).count() >= 6
    });
    let report = load.finish();
    assert!(recycled, "fewer than 6 recycles:\n{}", s.logs());
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed across max-requests churn: {:?}",
        report.failures.len(),
        report.ok + report.failures.len(),
        &report.failures[..report.failures.len().min(10)]
    );
}
