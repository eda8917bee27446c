//! The README's first command: the example site serves a static file, a WSGI
//! view and a CGI script from its embedded config.

use std::path::Path;

use crate::util::{get, Server};

#[test]
fn example_site_serves_static_wsgi_and_cgi() {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/site");
    let config = site.join("portico.toml");
    let s = Server::start_in(
        &site,
        &[
            "-c",
            config.to_str().unwrap(),
            "-b",
            "127.0.0.1:0",
            "-w",
            "1",
        ],
        1,
    );
    let page = get(s.addr, "/", &[]);
    assert_eq!(page.status, 200, "{}", s.logs());
    assert!(page.text().contains("portico"), "index.html served");
    let view = get(s.addr, "/hello?name=ci", &[]);
    assert_eq!(view.status, 200, "{}", s.logs());
    assert!(
        view.text().contains("Hello, ci, from a WSGI app"),
        "{}",
        view.text()
    );
    let script = get(s.addr, "/cgi-bin/hello.py?x=1", &[]);
    assert_eq!(script.status, 200, "{}", s.logs());
    assert!(
        script.text().contains("Hello from CGI"),
        "{}",
        script.text()
    );
    assert_eq!(
        get(s.addr, "/assets/style.css", &[]).header("cache-control"),
        Some("max-age=604800")
    );
}
