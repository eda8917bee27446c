//! Autoindex: an HTML listing of a directory that has no index file.
//!
//! Steps, in order:
//! 1. read the directory; skip names starting with `.` unless dotfiles are on
//!    (the same rule as for serving them);
//! 2. stat each entry through symlinks (a broken link is listed as itself);
//! 3. sort: directories first, then by name bytes;
//! 4. render: each name HTML-escaped for display and percent-encoded in its
//!    relative href (every byte but RFC 3986 unreserved ones, so `:` or `?`
//!    in a name can never turn the href into a scheme or a query); a
//!    directory gets a trailing `/`; `../` unless at the route's root.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::conditional::http_date;
use super::error::StaticError;

/// Bytes kept as-is in an href: RFC 3986 unreserved.
const HREF: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

struct Entry {
    name: Vec<u8>,
    is_dir: bool,
    size: u64,
    modified: Option<String>,
}

/// Steps 1–4 for directory `dir`, shown as request path `url_path`.
pub fn render(
    dir: &Path,
    url_path: &str,
    is_root: bool,
    dotfiles: bool,
) -> Result<String, StaticError> {
    let read = fs::read_dir(dir).map_err(|e| StaticError::from_io("listing", dir, e))?;
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| StaticError::from_io("listing", dir, e))?;
        let name = entry.file_name().as_bytes().to_vec();
        if !dotfiles && name.first() == Some(&b'.') {
            continue;
        }
        let meta = match fs::metadata(entry.path()) {
            Ok(m) => m,
            Err(_) => match entry.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            },
        };
        entries.push(Entry {
            name,
            is_dir: meta.is_dir(),
            size: meta.len(),
            modified: meta.modified().ok().and_then(http_date),
        });
    }
    entries.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));

    let title = escape(&percent_decode_str(url_path).decode_utf8_lossy());
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<table>\n\
         <tr><th>Name</th><th>Size</th><th>Last modified</th></tr>\n"
    );
    if !is_root {
        html.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for e in &entries {
        let slash = if e.is_dir { "/" } else { "" };
        let href = percent_encode(&e.name, HREF);
        let shown = escape(&String::from_utf8_lossy(&e.name));
        let size = if e.is_dir {
            "-".to_string()
        } else {
            e.size.to_string()
        };
        let modified = e.modified.as_deref().unwrap_or("-");
        // Writing to a String cannot fail.
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{href}{slash}\">{shown}{slash}</a></td><td>{size}</td><td>{modified}</td></tr>"
        );
    }
    html.push_str("</table>\n</body></html>\n");
    Ok(html)
}

/// HTML-escapes text for element content and double- or single-quoted
/// attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_encodes_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("<script>alert(1)"), "x").unwrap();
        fs::write(p.join("a b&c\"'.txt"), "xyz").unwrap();
        fs::write(p.join("café"), "").unwrap();
        fs::write(p.join("x:y?z#"), "").unwrap();
        let html = render(p, "/d/%3Cb%3E/", false, false).unwrap();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)"));
        assert!(html.contains("href=\"%3Cscript%3Ealert%281%29\""));
        assert!(html.contains("href=\"a%20b%26c%22%27.txt\">a b&amp;c&quot;&#39;.txt</a>"));
        assert!(html.contains("href=\"caf%C3%A9\">café</a>"));
        assert!(html.contains("href=\"x%3Ay%3Fz%23\""));
        assert!(html.contains("Index of /d/&lt;b&gt;/"));
        assert!(html.contains("href=\"../\""));
    }

    #[test]
    fn hides_dotfiles_and_sorts_directories_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join(".secret"), "x").unwrap();
        fs::write(p.join("a.txt"), "12345").unwrap();
        fs::create_dir(p.join("zdir")).unwrap();
        fs::create_dir(p.join("bdir")).unwrap();
        let html = render(p, "/", true, false).unwrap();
        assert!(!html.contains("secret"));
        assert!(!html.contains("../"));
        let b = html.find("bdir/").unwrap();
        let z = html.find("zdir/").unwrap();
        let a = html.find("a.txt").unwrap();
        assert!(b < z && z < a, "{html}");
        assert!(html.contains("<td>5</td>"));
        let shown = render(p, "/", true, true).unwrap();
        assert!(shown.contains(".secret"));
    }

    #[test]
    fn missing_directory_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = render(&dir.path().join("nope"), "/", true, false).unwrap_err();
        assert_eq!(err.status(), 404);
    }
}
