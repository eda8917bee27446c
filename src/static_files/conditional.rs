//! Validators and preconditions (RFC 9110 §8.8, §13).
//!
//! Steps, in the order of RFC 9110 §13.2.2:
//! 1. If-Match present: no strong match → 412;
//! 2. else If-Unmodified-Since (valid date): modified after it → 412;
//! 3. If-None-Match present: a weak match (or `*`) → 304 (we only serve GET
//!    and HEAD, where the RFC says 304 rather than 412);
//! 4. else If-Modified-Since (valid date): not modified since → 304;
//! 5. (`if_range_allows`, checked by the caller before using Range)
//!    If-Range: an ETag must match strongly, a date must equal Last-Modified
//!    exactly; otherwise the Range is ignored and the whole file is sent.
//!
//! Dates compare at one-second resolution, since that is all HTTP carries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{
    HeaderMap, HeaderValue, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE,
};

/// The validators of the representation being served.
#[derive(Debug, Clone)]
pub struct Validators {
    /// Strong ETag, quotes included.
    pub etag: String,
    /// Modification time truncated to whole seconds; None when it cannot be
    /// written as an HTTP date (before 1970 or after 9999).
    pub last_modified: Option<SystemTime>,
    /// The two as header values, formatted once (the cache keeps them).
    pub etag_value: Option<HeaderValue>,
    pub last_modified_value: Option<HeaderValue>,
}

impl Validators {
    /// ETag `"<mtime secs hex>.<nanos hex>-<size hex>[-<coding>]"`: the coding
    /// suffix keeps a precompressed variant's tag distinct even if its mtime
    /// and size happened to equal another variant's.
    pub fn new(mtime: Option<SystemTime>, size: u64, coding: Option<&str>) -> Self {
        let since = mtime.and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        let (secs, nanos) = since.map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
        let etag = match coding {
            Some(c) => format!("\"{secs:x}.{nanos:x}-{size:x}-{c}\""),
            None => format!("\"{secs:x}.{nanos:x}-{size:x}\""),
        };
        let last_modified = since
            .filter(|d| d.as_secs() < MAX_HTTP_DATE_SECS)
            .map(|d| UNIX_EPOCH + Duration::from_secs(d.as_secs()));
        Validators {
            etag_value: HeaderValue::from_str(&etag).ok(),
            last_modified_value: last_modified
                .and_then(http_date)
                .and_then(|d| HeaderValue::from_str(&d).ok()),
            etag,
            last_modified,
        }
    }
}

/// Seconds from 1970 to 10000-01-01: httpdate panics at or past this.
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_800;

/// `t` as an IMF-fixdate, or None where httpdate would panic.
pub fn http_date(t: SystemTime) -> Option<String> {
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (secs < MAX_HTTP_DATE_SECS).then(|| httpdate::fmt_http_date(t))
}

/// The result of steps 1–4.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// Steps 1–4 for a GET or HEAD.
pub fn evaluate(headers: &HeaderMap, v: &Validators) -> Precondition {
    if let Some(tags) = tag_list(headers, IF_MATCH) {
        if !tags.matches(&v.etag, true) {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(lm)) = (date(headers, IF_UNMODIFIED_SINCE), v.last_modified) {
        if lm > since {
            return Precondition::Failed;
        }
    }
    if let Some(tags) = tag_list(headers, IF_NONE_MATCH) {
        if tags.matches(&v.etag, false) {
            return Precondition::NotModified;
        }
    } else if let (Some(since), Some(lm)) = (date(headers, IF_MODIFIED_SINCE), v.last_modified) {
        if lm <= since {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Step 5: may a Range be honoured? True when there is no If-Range.
pub fn if_range_allows(headers: &HeaderMap, v: &Validators) -> bool {
    let Some(value) = headers.get(IF_RANGE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        // A weak tag never matches strongly; `parse_tags` keeps that flag.
        return parse_tags(value).is_some_and(|tags| tags.matches(&v.etag, true));
    }
    match (httpdate::parse_http_date(value), v.last_modified) {
        (Ok(d), Some(lm)) => d == lm,
        _ => false,
    }
}

fn date(headers: &HeaderMap, name: http::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// An If-Match / If-None-Match value.
#[derive(Debug, PartialEq, Eq)]
enum Tags {
    Any,
    /// `(weak, opaque tag with its quotes)`
    List(Vec<(bool, String)>),
}

impl Tags {
    fn matches(&self, etag: &str, strong: bool) -> bool {
        match self {
            Tags::Any => true,
            // Our own ETags are always strong, so only the other side's flag
            // matters for strong comparison.
            Tags::List(list) => list
                .iter()
                .any(|(weak, tag)| tag == etag && !(strong && *weak)),
        }
    }
}

/// Every field line of `name` merged; None when the header is absent. A
/// malformed list counts as present but matching nothing: If-Match then
/// fails (safe), If-None-Match then never yields 304 (safe).
fn tag_list(headers: &HeaderMap, name: http::HeaderName) -> Option<Tags> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut all = Vec::new();
    for value in values {
        match value.to_str().ok().and_then(parse_tags) {
            Some(Tags::Any) => return Some(Tags::Any),
            Some(Tags::List(list)) => all.extend(list),
            None => {}
        }
    }
    Some(Tags::List(all))
}

/// `*` or `#entity-tag`, where entity-tag is `[W/]"<etagc>*"`.
fn parse_tags(s: &str) -> Option<Tags> {
    if s.trim() == "*" {
        return Some(Tags::Any);
    }
    let mut list = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        let body = rest.strip_prefix('"')?;
        let end = body.find('"')?;
        list.push((weak, format!("\"{}\"", &body[..end])));
        rest = &body[end + 1..];
    }
    Some(Tags::List(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"abc\"";

    fn v() -> Validators {
        Validators {
            etag: ETAG.into(),
            last_modified: Some(UNIX_EPOCH + Duration::from_secs(1_000_000_000)),
            etag_value: None,
            last_modified_value: None,
        }
    }

    fn lm() -> String {
        http_date(v().last_modified.unwrap()).unwrap()
    }

    fn earlier() -> String {
        http_date(UNIX_EPOCH + Duration::from_secs(999_999_999)).unwrap()
    }

    fn later() -> String {
        http_date(UNIX_EPOCH + Duration::from_secs(1_000_000_001)).unwrap()
    }

    fn eval(pairs: &[(http::HeaderName, &str)]) -> Precondition {
        let mut h = HeaderMap::new();
        for (k, val) in pairs {
            h.append(k.clone(), HeaderValue::from_str(val).unwrap());
        }
        evaluate(&h, &v())
    }

    use Precondition::*;

    #[test]
    fn etag_and_dates() {
        let v = Validators::new(Some(UNIX_EPOCH + Duration::new(16, 5)), 255, None);
        assert_eq!(v.etag, "\"10.5-ff\"");
        assert_eq!(v.last_modified, Some(UNIX_EPOCH + Duration::from_secs(16)));
        let gz = Validators::new(Some(UNIX_EPOCH + Duration::new(16, 5)), 255, Some("gzip"));
        assert_ne!(gz.etag, v.etag);
        let far = UNIX_EPOCH + Duration::from_secs(MAX_HTTP_DATE_SECS + 5);
        assert!(http_date(far).is_none());
        assert!(Validators::new(Some(far), 1, None).last_modified.is_none());
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert!(http_date(before).is_none());
        assert!(Validators::new(Some(before), 1, None)
            .last_modified
            .is_none());
    }

    #[test]
    fn no_conditions_proceed() {
        assert_eq!(eval(&[]), Proceed);
    }

    #[test]
    fn if_match() {
        assert_eq!(eval(&[(IF_MATCH, ETAG)]), Proceed);
        assert_eq!(eval(&[(IF_MATCH, "\"x\", \"abc\"")]), Proceed);
        assert_eq!(eval(&[(IF_MATCH, "*")]), Proceed);
        assert_eq!(eval(&[(IF_MATCH, "\"x\"")]), Failed);
        // Strong comparison: a weak tag never matches.
        assert_eq!(eval(&[(IF_MATCH, "W/\"abc\"")]), Failed);
        assert_eq!(eval(&[(IF_MATCH, "garbage")]), Failed);
        // Split across field lines.
        assert_eq!(eval(&[(IF_MATCH, "\"x\""), (IF_MATCH, ETAG)]), Proceed);
    }

    #[test]
    fn if_match_overrides_if_unmodified_since() {
        let e = earlier();
        assert_eq!(eval(&[(IF_UNMODIFIED_SINCE, &e)]), Failed);
        assert_eq!(
            eval(&[(IF_MATCH, ETAG), (IF_UNMODIFIED_SINCE, &e)]),
            Proceed
        );
        assert_eq!(eval(&[(IF_UNMODIFIED_SINCE, &lm())]), Proceed);
        assert_eq!(eval(&[(IF_UNMODIFIED_SINCE, "not a date")]), Proceed);
    }

    #[test]
    fn if_none_match() {
        assert_eq!(eval(&[(IF_NONE_MATCH, ETAG)]), NotModified);
        // Weak comparison.
        assert_eq!(eval(&[(IF_NONE_MATCH, "W/\"abc\"")]), NotModified);
        assert_eq!(eval(&[(IF_NONE_MATCH, "*")]), NotModified);
        assert_eq!(eval(&[(IF_NONE_MATCH, "\"x\"")]), Proceed);
        assert_eq!(eval(&[(IF_NONE_MATCH, "garbage")]), Proceed);
    }

    #[test]
    fn if_none_match_overrides_if_modified_since() {
        let l = later();
        let e = earlier();
        assert_eq!(eval(&[(IF_MODIFIED_SINCE, &l)]), NotModified);
        assert_eq!(eval(&[(IF_MODIFIED_SINCE, &lm())]), NotModified);
        assert_eq!(eval(&[(IF_MODIFIED_SINCE, &e)]), Proceed);
        assert_eq!(
            eval(&[(IF_NONE_MATCH, "\"x\""), (IF_MODIFIED_SINCE, &l)]),
            Proceed
        );
        assert_eq!(
            eval(&[(IF_NONE_MATCH, ETAG), (IF_MODIFIED_SINCE, &e)]),
            NotModified
        );
        assert_eq!(eval(&[(IF_MODIFIED_SINCE, "yesterday")]), Proceed);
    }

    #[test]
    fn failed_precondition_beats_not_modified() {
        assert_eq!(eval(&[(IF_MATCH, "\"x\""), (IF_NONE_MATCH, ETAG)]), Failed);
        let e = earlier();
        assert_eq!(
            eval(&[(IF_UNMODIFIED_SINCE, &e), (IF_NONE_MATCH, ETAG)]),
            Failed
        );
        assert_eq!(
            eval(&[(IF_MATCH, ETAG), (IF_NONE_MATCH, ETAG)]),
            NotModified
        );
    }

    #[test]
    fn if_range() {
        let check = |val: &str| {
            let mut h = HeaderMap::new();
            h.insert(IF_RANGE, HeaderValue::from_str(val).unwrap());
            if_range_allows(&h, &v())
        };
        assert!(if_range_allows(&HeaderMap::new(), &v()));
        assert!(check(ETAG));
        assert!(!check("\"x\""));
        assert!(!check("W/\"abc\""));
        assert!(check(&lm()));
        assert!(!check(&earlier()));
        assert!(!check(&later()));
        assert!(!check("junk"));
    }
}
