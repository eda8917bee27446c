//! Conditional requests, ranges and precompressed variants.

use super::*;

// ---- conditional requests ----

async fn validators(site: &Site, path: &str) -> (String, String) {
    let r = get(site, path, &[]).await;
    (
        r.header(ETAG).to_string(),
        r.header(LAST_MODIFIED).to_string(),
    )
}

#[tokio::test]
async fn conditional_requests() {
    let mut site = Site::new();
    site.opts.expires = Some(Duration::from_secs(60));
    site.opts.precompressed = true;
    site.write("f.txt", b"content");
    let (etag, lm) = validators(&site, "/f.txt").await;
    let old = "Thu, 01 Jan 1998 00:00:00 GMT";

    let r = get(&site, "/f.txt", &[(IF_NONE_MATCH, &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header(ETAG), etag);
    assert_eq!(r.header(LAST_MODIFIED), lm);
    assert_eq!(r.header(CACHE_CONTROL), "max-age=60");
    assert!(r.headers.contains_key(EXPIRES));
    assert_eq!(r.header(VARY), "accept-encoding");

    // If-None-Match wins over If-Modified-Since.
    let r = get(
        &site,
        "/f.txt",
        &[(IF_NONE_MATCH, "\"other\""), (IF_MODIFIED_SINCE, &lm)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        get(&site, "/f.txt", &[(IF_MODIFIED_SINCE, &lm)])
            .await
            .status,
        304
    );
    assert_eq!(
        get(&site, "/f.txt", &[(IF_MODIFIED_SINCE, old)])
            .await
            .status,
        200
    );
    let r = request(&site, Method::HEAD, "/f.txt", &[(IF_NONE_MATCH, "*")]).await;
    assert_eq!(r.status, 304);

    // If-Match / If-Unmodified-Since.
    assert_eq!(
        get(&site, "/f.txt", &[(IF_MATCH, "\"other\"")])
            .await
            .status,
        412
    );
    assert_eq!(get(&site, "/f.txt", &[(IF_MATCH, &etag)]).await.status, 200);
    assert_eq!(
        get(&site, "/f.txt", &[(IF_UNMODIFIED_SINCE, old)])
            .await
            .status,
        412
    );
    assert_eq!(
        get(&site, "/f.txt", &[(IF_UNMODIFIED_SINCE, &lm)])
            .await
            .status,
        200
    );
    // If-Match wins over If-Unmodified-Since.
    let r = get(
        &site,
        "/f.txt",
        &[(IF_MATCH, &etag), (IF_UNMODIFIED_SINCE, old)],
    )
    .await;
    assert_eq!(r.status, 200);
    // 412 is checked before 304.
    let r = get(
        &site,
        "/f.txt",
        &[(IF_MATCH, "\"other\""), (IF_NONE_MATCH, &etag)],
    )
    .await;
    assert_eq!(r.status, 412);
    let r = get(
        &site,
        "/f.txt",
        &[(IF_MATCH, &etag), (IF_NONE_MATCH, &etag)],
    )
    .await;
    assert_eq!(r.status, 304);
    // A 304 beats Range.
    let r = get(
        &site,
        "/f.txt",
        &[(IF_NONE_MATCH, &etag), (RANGE, "bytes=0-1")],
    )
    .await;
    assert_eq!(r.status, 304);
}

// ---- ranges ----

#[tokio::test]
async fn single_ranges() {
    let site = Site::new();
    site.write("f.bin", b"0123456789");
    let r = get(&site, "/f.bin", &[(RANGE, "bytes=2-4")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"234");
    assert_eq!(r.header(CONTENT_RANGE), "bytes 2-4/10");
    assert_eq!(r.header(CONTENT_LENGTH), "3");
    let r = get(&site, "/f.bin", &[(RANGE, "bytes=-5")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_slice()), (206, &b"56789"[..]));
    assert_eq!(r.header(CONTENT_RANGE), "bytes 5-9/10");
    let r = get(&site, "/f.bin", &[(RANGE, "bytes=5-")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_slice()), (206, &b"56789"[..]));
    // Malformed → ignored.
    let r = get(&site, "/f.bin", &[(RANGE, "bytes=x-y")]).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 10));
    // Unsatisfiable.
    let r = get(&site, "/f.bin", &[(RANGE, "bytes=10-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header(CONTENT_RANGE), "bytes */10");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn multiple_ranges_are_multipart() {
    let site = Site::new();
    site.write("f.txt", b"0123456789");
    let r = get(&site, "/f.txt", &[(RANGE, "bytes=0-1, 7-")]).await;
    assert_eq!(r.status, 206);
    let ct = r.header(CONTENT_TYPE);
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let expected = format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
         \r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 7-9/10\r\n\r\n789\
         \r\n--{boundary}--\r\n"
    );
    assert_eq!(String::from_utf8(r.body.clone()).unwrap(), expected);
    assert_eq!(r.header(CONTENT_LENGTH), expected.len().to_string());
    assert!(r.headers.get(CONTENT_RANGE).is_none());
    // Overlapping ranges coalesce into one part.
    let r = get(&site, "/f.txt", &[(RANGE, "bytes=0-3, 2-5")]).await;
    assert_eq!(r.header(CONTENT_RANGE), "bytes 0-5/10");
    assert_eq!(r.body, b"012345");
}

#[tokio::test]
async fn if_range() {
    let site = Site::new();
    site.write("f.txt", b"0123456789");
    let (etag, lm) = validators(&site, "/f.txt").await;
    let r = get(&site, "/f.txt", &[(RANGE, "bytes=0-1"), (IF_RANGE, &etag)]).await;
    assert_eq!((r.status.as_u16(), r.body.as_slice()), (206, &b"01"[..]));
    let r = get(&site, "/f.txt", &[(RANGE, "bytes=0-1"), (IF_RANGE, &lm)]).await;
    assert_eq!(r.status, 206);
    let r = get(
        &site,
        "/f.txt",
        &[(RANGE, "bytes=0-1"), (IF_RANGE, "\"stale\"")],
    )
    .await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 10));
    let weak = format!("W/{etag}");
    let r = get(&site, "/f.txt", &[(RANGE, "bytes=0-1"), (IF_RANGE, &weak)]).await;
    assert_eq!(r.status, 200);
    let r = get(
        &site,
        "/f.txt",
        &[
            (RANGE, "bytes=0-1"),
            (IF_RANGE, "Thu, 01 Jan 1998 00:00:00 GMT"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn large_file_offsets_are_u64() {
    // A sparse 3 GiB file: nothing is written, offsets past 2^31 and 2^32 work.
    let site = Site::new();
    let p = site.root().join("big.bin");
    let f = fs::File::create(&p).unwrap();
    let len: u64 = 3 << 30;
    f.set_len(len).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"end", len - 3).unwrap();
    let r = request(&site, Method::HEAD, "/big.bin", &[]).await;
    assert_eq!(r.header(CONTENT_LENGTH), len.to_string());
    let r = get(&site, "/big.bin", &[(RANGE, "bytes=-3")]).await;
    assert_eq!(r.body, b"end");
    assert_eq!(
        r.header(CONTENT_RANGE),
        format!("bytes {}-{}/{len}", len - 3, len - 1)
    );
    let r = get(&site, "/big.bin", &[(RANGE, "bytes=2147483648-2147483650")]).await;
    assert_eq!(r.body, [0, 0, 0]);
}

// ---- precompressed ----

#[tokio::test]
async fn precompressed_variants() {
    let mut site = Site::new();
    site.opts.precompressed = true;
    site.write("app.js", b"plain-js");
    site.write("app.js.gz", b"gz-bytes");
    site.write("app.js.br", b"br-bytes!");
    let plain = get(&site, "/app.js", &[]).await;
    assert_eq!(plain.body, b"plain-js");
    assert!(plain.headers.get(CONTENT_ENCODING).is_none());
    assert_eq!(plain.header(VARY), "accept-encoding");

    let r = get(&site, "/app.js", &[(ACCEPT_ENCODING, "gzip, deflate, br")]).await;
    assert_eq!(r.body, b"br-bytes!");
    assert_eq!(r.header(CONTENT_ENCODING), "br");
    assert!(r.header(CONTENT_TYPE).contains("javascript"));
    assert_eq!(r.header(VARY), "accept-encoding");
    assert_ne!(r.header(ETAG), plain.header(ETAG));

    let r = get(&site, "/app.js", &[(ACCEPT_ENCODING, "br;q=0.5, gzip")]).await;
    assert_eq!(r.header(CONTENT_ENCODING), "gzip");
    assert_eq!(r.body, b"gz-bytes");
    // zstd preferred but missing: falls to the next acceptable.
    let r = get(&site, "/app.js", &[(ACCEPT_ENCODING, "zstd, gzip;q=0.9")]).await;
    assert_eq!(r.header(CONTENT_ENCODING), "gzip");
    let r = get(&site, "/app.js", &[(ACCEPT_ENCODING, "zstd")]).await;
    assert_eq!(r.body, b"plain-js");

    // Ranges apply to the chosen variant.
    let r = get(
        &site,
        "/app.js",
        &[(ACCEPT_ENCODING, "gzip"), (RANGE, "bytes=0-1")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"gz");
    assert_eq!(r.header(CONTENT_RANGE), "bytes 0-1/8");
    // Several ranges of a compressed variant: the whole variant.
    let r = get(
        &site,
        "/app.js",
        &[(ACCEPT_ENCODING, "gzip"), (RANGE, "bytes=0-1,4-5")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"gz-bytes");

    // 304 for the variant's own ETag only.
    let gz_etag = get(&site, "/app.js", &[(ACCEPT_ENCODING, "gzip")])
        .await
        .header(ETAG)
        .to_string();
    let r = get(
        &site,
        "/app.js",
        &[(ACCEPT_ENCODING, "gzip"), (IF_NONE_MATCH, &gz_etag)],
    )
    .await;
    assert_eq!(r.status, 304);
    assert_eq!(r.header(VARY), "accept-encoding");
    let r = get(&site, "/app.js", &[(IF_NONE_MATCH, &gz_etag)]).await;
    assert_eq!(r.status, 200);

    // Off: siblings ignored.
    site.opts.precompressed = false;
    let r = get(&site, "/app.js", &[(ACCEPT_ENCODING, "br")]).await;
    assert_eq!(r.body, b"plain-js");
    assert!(r.headers.get(VARY).is_none());
}

#[tokio::test]
async fn precompressed_sibling_outside_root_is_skipped() {
    let mut site = Site::new();
    site.opts.precompressed = true;
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("x.gz"), b"outside").unwrap();
    site.write("a.css", b"inside");
    std::os::unix::fs::symlink(outside.path().join("x.gz"), site.root().join("a.css.gz")).unwrap();
    let r = get(&site, "/a.css", &[(ACCEPT_ENCODING, "gzip")]).await;
    assert_eq!(r.body, b"inside");
    assert!(r.headers.get(CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn precompressed_index() {
    let mut site = Site::new();
    site.opts.precompressed = true;
    site.write("d/index.html", b"plain");
    site.write("d/index.html.gz", b"gzipped");
    let r = get(&site, "/d/", &[(ACCEPT_ENCODING, "gzip")]).await;
    assert_eq!(r.body, b"gzipped");
    assert_eq!(r.header(CONTENT_TYPE), "text/html; charset=utf-8");
}
