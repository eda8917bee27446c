//! Active health checks: per worker and pool, a local task sends
//! `GET health_uri` to every server each `health_interval` on a new
//! connection; a status other than `health_status`, or no answer within the
//! pool's timeouts, marks the server down until a check passes again.
//! HTTP servers only; uwsgi servers rely on passive health.

use std::rc::Rc;

use http::{header, Request};

use super::body::OutgoingBody;
use super::client;
use super::pool::Pool;
use crate::config::{HealthCheck, UpstreamUrl};

/// Starts the pool's checks (on the worker's `LocalSet`) when it has any.
pub fn spawn(pool: Rc<Pool>) {
    let Some(check) = pool.config.health.clone() else {
        return;
    };
    tokio::task::spawn_local(async move {
        loop {
            for i in 0..pool.servers.len() {
                match probe(&pool, i, &check).await {
                    Ok(()) => pool.checked(i, true, ""),
                    Err(why) => pool.checked(i, false, &why),
                }
            }
            tokio::time::sleep(check.interval).await;
        }
    });
}

async fn probe(pool: &Pool, i: usize, check: &HealthCheck) -> Result<(), String> {
    let cfg = &pool.config;
    let url = &pool.servers[i].config.url;
    let host = match url {
        UpstreamUrl::Http { .. } => url.to_string().trim_start_matches("http://").to_string(),
        UpstreamUrl::HttpUnix(_) => "localhost".to_string(),
        // uwsgi servers are judged by passive health only.
        UpstreamUrl::Uwsgi { .. } | UpstreamUrl::UwsgiUnix(_) => return Ok(()),
    };
    let mut conn = client::connect(url, cfg.connect_timeout, cfg.send_timeout)
        .await
        .map_err(|e| e.to_string())?;
    let req = Request::get(check.uri.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, "portico-health-check")
        .body(OutgoingBody::empty())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(cfg.read_timeout, conn.sender.send_request(req))
        .await
        .map_err(|_| format!("no response within {:?}", cfg.read_timeout))?
        .map_err(|e| e.to_string())?;
    if response.status().as_u16() == check.status {
        Ok(())
    } else {
        Err(format!(
            "status {}, expected {}",
            response.status().as_u16(),
            check.status
        ))
    }
}
